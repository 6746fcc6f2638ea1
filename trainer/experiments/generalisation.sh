#!/usr/bin/env bash
# Generalisation experiments for the demo model: each configuration is
# trained, finalized, locked with the demo's content gate (development key)
# and evaluated with `cxr-trainer evaluate` on the NIH test patients (tagged
# and untagged) and the held-out Kermany paediatric half (untagged), the
# same way as the demo itself. Writes runs/experiments/<name>/ and prints one
# comparison table (Markdown) on stdout.
#
#   bash trainer/experiments/generalisation.sh [CONFIG.toml ...]
#
# Defaults to the demo's configuration and every file in
# trainer/configs/experiments/. Needs ../shared/data, .cache/pydicom-data-1.0.0
# (the OOD studies: `cargo test -p cxr-tests --test real_dicom` fetches them)
# and runs/content-gate (the demo's `fit-gate` command, trainer/demo/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data
gate=runs/content-gate
pyd=.cache/pydicom-data-1.0.0
for need in "$data/nih-chestxray14-subset/labels.csv" "$gate/content-gate.onnx" "$pyd/RG3_J2KI.dcm"; do
    [[ -e $need ]] || { echo "missing $need (see the header of $0)" >&2; exit 2; }
done
configs=("$@")
[[ ${#configs[@]} -gt 0 ]] || configs=(trainer/configs/demo-nih.toml trainer/configs/experiments/*.toml)
cargo build --release -q -p cxr-trainer
trainer=target/release/cxr-trainer
# The nih-plus-kermany experiment's table: the demo's NIH split (from
# evaluate's lists of its validation and test films) plus the gate's
# training half of Kermany.
tables=runs/experiments/tables
if [[ ! -f $tables/nih-plus-kermany.csv ]]; then
    mkdir -p "$tables"
    for split in validation test; do
        $trainer evaluate --bundle trainer/demo/demo-nih.cxrb --data "nih:$data/nih-chestxray14-subset/labels.csv" \
            --split $split --config trainer/configs/demo-nih.toml --out "$tables" --name "nih-$split" >"$tables/nih-$split.log" 2>&1
    done
    python3 trainer/experiments/mixed-table.py "$data/nih-chestxray14-subset/labels.csv" \
        "$data/kermany-paediatric-cxr-subset/labels.csv" "$gate/held-out-kermany-external.txt" \
        "$tables/nih-validation.json" "$tables/nih-test.json" "$tables/nih-plus-kermany.csv"
fi
for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    out=runs/experiments/$name
    mkdir -p "$out"
    if [[ ! -f $out/bundle.cxrb ]]; then
        start=$(date +%s)
        $trainer train --config "$config" --out "$out/run" >"$out/train.log" 2>&1
        echo "$(( $(date +%s) - start ))" >"$out/train-seconds"
        $trainer finalize --run "$out/run" --out "$out/final" \
            --ood "$pyd/RG3_J2KI.dcm" --ood "$pyd/693_J2KR.dcm" \
            --ood "$pyd/MR2_J2KI.dcm" --ood "$pyd/US1_J2KI.dcm" >"$out/finalize.log" 2>&1
        $trainer lock --onnx "$out/final/model.onnx" --params "$out/final/params.toml" \
            --card "$out/final/model-card.md" --content-gate "$gate" \
            --key trainer/demo/keys/dev-demo.key --model-id "cxr-experiment-$name" --version 1 \
            --board dev-x86 --data "$data/nih-chestxray14-subset/labels.csv" --config "$config" \
            --seed 1 --source-revision experiment --created-unix-s 0 \
            --out "$out/bundle.cxrb" >"$out/lock.log" 2>&1
    fi
    # The NIH test patients as this configuration splits them: every
    # configuration here keeps the demo's seed and fractions (nih-plus-kermany
    # also prescribes the demo's split in its table), so this is the same set.
    nih=(--data "nih:$data/nih-chestxray14-subset/labels.csv" --split test --config "$config")
    $trainer evaluate --bundle "$out/bundle.cxrb" "${nih[@]}" --out "$out" --name nih-test >"$out/evaluate.log" 2>&1
    $trainer evaluate --bundle "$out/bundle.cxrb" "${nih[@]}" --tags none --out "$out" --name nih-test-untagged >>"$out/evaluate.log" 2>&1
    $trainer evaluate --bundle "$out/bundle.cxrb" --data "kermany:$data/kermany-paediatric-cxr-subset/labels.csv" \
        --only "$gate/held-out-kermany-external.txt" --tags none --out "$out" --name kermany-external >>"$out/evaluate.log" 2>&1
done
python3 - "${configs[@]}" <<'PY'
import json, os, sys
def pneumonia(path):
    r = json.load(open(path))
    l = next((l for l in r["labels"] if l["label"] == "Pneumonia"), {})
    a = l.get("auroc") or {}
    d = l.get("auroc_decided") or {}
    ci = lambda a: f'{a["value"]:.3f} ({a["low"]:.3f}-{a["high"]:.3f})' if a.get("resamples") else (f'{a["value"]:.3f}' if a else "-")
    return f'{r["coverage"]*100:.1f}%', ci(a), ci(d), l.get("ece")
print("| configuration | train s | NIH test: coverage, Pneumonia AUROC | NIH untagged: coverage, AUROC | Kermany external: coverage, AUROC (all scored) | Kermany: AUROC (decided) | Kermany ECE |")
print("|---|---:|---|---|---|---|---:|")
for c in sys.argv[1:]:
    n = os.path.basename(c)[:-5]; o = f"runs/experiments/{n}"
    t = open(f"{o}/train-seconds").read().strip() if os.path.exists(f"{o}/train-seconds") else "-"
    a = pneumonia(f"{o}/nih-test.json"); u = pneumonia(f"{o}/nih-test-untagged.json"); k = pneumonia(f"{o}/kermany-external.json")
    e = f"{k[3]:.3f}" if k[3] is not None else "-"
    print(f"| {n} | {t} | {a[0]}, {a[1]} | {u[0]}, {u[1]} | {k[0]}, {k[1]} | {k[2]} | {e} |")
PY
