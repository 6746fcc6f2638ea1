#!/usr/bin/env bash
# The 3-seed ensemble as one bundle (trainer/demo/recipe-v2.md, "The
# ensemble as one bundle"): the demo and seeds 2 and 3 are trained,
# finalized, locked and evaluated alone by generalisation.sh; then the three
# runs are finalized together (each calibrated alone, the ensemble
# recalibrated as a whole, its OOD gate fitted on its own outputs), locked
# with `lock --ensemble`, and evaluated through the appliance's study path
# like every other bundle. Prints the comparison (recipe-v2-table.py
# ensemble) on stdout.
#
#   bash trainer/experiments/ensemble.sh
#
# Needs what generalisation.sh needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data
gate=runs/content-gate
pyd=.cache/pydicom-data-1.0.0
v2=trainer/configs/recipe-v2
bash trainer/experiments/generalisation.sh trainer/configs/demo-nih.toml $v2/seed-2.toml $v2/seed-3.toml >/dev/null
trainer=target/release/cxr-trainer
out=runs/experiments/ensemble-3
mkdir -p "$out"
if [[ ! -f $out/bundle.cxrb ]]; then
    start=$(date +%s)
    $trainer finalize --run runs/experiments/demo-nih/run --run runs/experiments/seed-2/run \
        --run runs/experiments/seed-3/run --out "$out/final" \
        --ood "$pyd/RG3_J2KI.dcm" --ood "$pyd/693_J2KR.dcm" \
        --ood "$pyd/MR2_J2KI.dcm" --ood "$pyd/US1_J2KI.dcm" >"$out/finalize.log" 2>&1
    echo "$(( $(date +%s) - start ))" >"$out/finalize-seconds"
    $trainer lock --ensemble "$out/final/ensemble.toml" --params "$out/final/params.toml" \
        --card "$out/final/model-card.md" --content-gate "$gate" \
        --key trainer/demo/keys/dev-demo.key --model-id cxr-experiment-ensemble-3 --version 1 \
        --board dev-x86 --data "$data/nih-chestxray14-subset/labels.csv" \
        --config trainer/configs/demo-nih.toml \
        --seed 1 --source-revision experiment --created-unix-s 0 \
        --out "$out/bundle.cxrb" >"$out/lock.log" 2>&1
fi
nih=(--data "nih:$data/nih-chestxray14-subset/labels.csv" --split test --config trainer/configs/demo-nih.toml)
$trainer evaluate --bundle "$out/bundle.cxrb" "${nih[@]}" --out "$out" --name nih-test >"$out/evaluate.log" 2>&1
$trainer evaluate --bundle "$out/bundle.cxrb" --data "kermany:$data/kermany-paediatric-cxr-subset/labels.csv" \
    --only "$gate/held-out-kermany-external.txt" --tags none --out "$out" --name kermany-external >>"$out/evaluate.log" 2>&1
python3 trainer/experiments/recipe-v2-table.py ensemble
