#!/usr/bin/env bash
# tract (criterion) vs ONNX Runtime on the same random-weight ViT-B/16 files,
# one after the other in one session. Prints a markdown table; the last line is
# `tract/ort ratio @512 1thread: X`. Usage: bash benches/compare_engine.sh [SIZES]
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${1:-224,512}"
models=target/bench-models
mkdir -p "$models"
python3 -m pip install --quiet onnxruntime numpy >/dev/null
for size in ${sizes//,/ }; do
  [ -f "$models/vit_b16_$size.onnx" ] || cargo run --release -q -p cxr-appliance -- dev-random-model \
    --preset vit-b16 --size "$size" --model "$models/vit_b16_$size.onnx" --params "$models/vit_b16_$size.toml"
done
CXR_BENCH_MODELS="$models" CXR_BENCH_SIZES="$sizes" cargo bench -p cxr-benches --bench engine -- --noplot >/tmp/cxr-engine-bench.log 2>&1
python3 benches/ort_vit.py "$models" "$sizes" >/tmp/cxr-ort.json
python3 - "$sizes" <<'PY'
import json, os, sys
ort = json.load(open("/tmp/cxr-ort.json"))
sizes = [int(s) for s in sys.argv[1].split(",")]
def tract(size, threads, batch):
    p = f"target/criterion/tract_vit_b16/{size}px_{threads}thread/batch{batch}/new/estimates.json"
    return json.load(open(p))["median"]["point_estimate"] / 1e9
print(f"| size | threads | batch | tract | onnxruntime {ort['onnxruntime_version']} | tract/ort |")
print("|---|---|---|---|---|---|")
for size in sizes:
    for threads in (1, 2):
        for batch in (1, 5):
            t, o = tract(size, threads, batch), ort[f"{size}px_{threads}thread/batch{batch}"]
            print(f"| {size} | {threads} | {batch} | {t*1e3:.0f} ms | {o*1e3:.0f} ms | {t/o:.2f} |")
for size in sizes:
    print(f"tract 2-thread speed-up @{size} batch1: {tract(size, 1, 1) / tract(size, 2, 1):.2f}x")
if 512 in sizes:
    print(f"tract/ort ratio @512 1thread: {tract(512, 1, 1) / ort['512px_1thread/batch1']:.2f}")
PY
