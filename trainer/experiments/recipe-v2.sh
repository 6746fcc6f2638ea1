#!/usr/bin/env bash
# Recipe v2 on the demo: random init (the demo's own recipe), MAE init, SWA,
# two more seeds on the demo's split, and their 3-seed ensemble, each trained,
# finalized, locked and evaluated by generalisation.sh (the same pipeline as
# the generalisation experiments), then compared in one table with
# intervals (recipe-v2-table.py). Prints the table (Markdown) on stdout.
#
#   bash trainer/experiments/recipe-v2.sh
#
# Needs what generalisation.sh needs. Pretrains the MAE encoder first
# (trainer/configs/demo-mae.toml into runs/demo-mae) unless it is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cxr-trainer
mkdir -p runs
# A run folder that is there is resumed (to its last epoch, or no further).
resume=()
[[ -f runs/demo-mae/mae.safetensors ]] && resume=(--resume)
target/release/cxr-trainer pretrain --config trainer/configs/demo-mae.toml --out runs/demo-mae \
    "${resume[@]}" >>runs/demo-mae.log 2>&1
bash trainer/experiments/generalisation.sh trainer/configs/demo-nih.toml \
    trainer/configs/recipe-v2/mae-init.toml trainer/configs/recipe-v2/swa.toml \
    trainer/configs/recipe-v2/seed-2.toml trainer/configs/recipe-v2/seed-3.toml >/dev/null
python3 trainer/experiments/recipe-v2-table.py
