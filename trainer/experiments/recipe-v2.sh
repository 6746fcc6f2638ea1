#!/usr/bin/env bash
# Recipe v2 on the demo (trainer/demo/recipe-v2.md): random init (the demo's
# own recipe), MAE init from three pretrainings, SWA, two more seeds on the
# demo's split, and their 3-seed ensemble. Each model is trained, finalized,
# locked and evaluated by generalisation.sh (the pipeline of the
# generalisation experiments), then all are compared in one table with
# intervals (recipe-v2-table.py), printed on stdout as Markdown.
#
#   bash trainer/experiments/recipe-v2.sh
#
# Needs what generalisation.sh needs. Pretrains the MAE encoders first
# (runs/demo-mae, runs/demo-mae-nih-only, runs/demo-mae-nih-only-long); a
# run folder that is there is resumed, to its last epoch or no further.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cxr-trainer
mkdir -p runs
for name in demo-mae demo-mae-nih-only demo-mae-nih-only-long; do
    resume=()
    [[ -f runs/$name/mae.safetensors ]] && resume=(--resume)
    target/release/cxr-trainer pretrain --config "trainer/configs/$name.toml" --out "runs/$name" \
        "${resume[@]}" >>"runs/$name.log" 2>&1
done
v2=trainer/configs/recipe-v2
bash trainer/experiments/generalisation.sh trainer/configs/demo-nih.toml \
    $v2/mae-init.toml $v2/mae-init-layer-decay.toml $v2/mae-nih-only-init.toml \
    $v2/mae-nih-only-long-init.toml $v2/swa.toml $v2/seed-2.toml $v2/seed-3.toml >/dev/null
python3 trainer/experiments/recipe-v2-table.py
