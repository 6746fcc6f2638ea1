#!/usr/bin/env bash
# Whole studies, from DICOM bytes to decision: `cxr-appliance classify` against
# the Python stack (pydicom + pylibjpeg-openjpeg, numpy, then ONNX Runtime f32
# and OpenVINO f32 / bf16) on the same random-weight ViT-B/16 ONNX files, five
# TTA views, 1 and 2 threads, one after the other in one session. The
# appliance's reduced-precision engine (OpenVINO bf16 through cxr-engine, the
# library from the same wheel) is timed per view after its golden self-test
# (benches/examples/reduced_precision_views.rs).
#
# Usage: bash benches/compare_study.sh [SIZES] (default 224,512; REPEATS=3)
# Prints one markdown table, then two lines, last, each ending in a ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${1:-224,512}"
repeats="${REPEATS:-3}"
models=target/bench-models
venv=target/bench-venv
data=.cache/pydicom-data-1.0.0
film="$data/RG1_J2KR.dcm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p cxr-appliance
cargo build --release -q -p cxr-benches --example reduced_precision_views
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet pydicom pylibjpeg pylibjpeg-openjpeg numpy onnxruntime openvino
if [ ! -f "$film" ]; then
  "$venv/bin/pip" download --quiet --no-deps -d "$work/wheel" pydicom-data==1.0.0
  mkdir -p "$data"
  "$venv/bin/python" - "$work/wheel" "$data" <<'PY'
import glob, os, sys, zipfile
z = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
for n in z.namelist():
    if n.startswith("data_store/data/") and n.endswith(".dcm"):
        open(os.path.join(sys.argv[2], os.path.basename(n)), "wb").write(z.read(n))
PY
fi
mkdir -p "$models"
for size in ${sizes//,/ }; do
  [ -f "$models/vit_b16_$size.onnx" ] || target/release/cxr-appliance dev-random-model \
    --preset vit-b16 --size "$size" --model "$models/vit_b16_$size.onnx" --params "$models/vit_b16_$size.toml"
done

# The appliance: one classify process per (size, threads), the film given
# REPEATS + 1 times; the first study warms up and is dropped.
for size in ${sizes//,/ }; do
  for threads in 1 2; do
    files=()
    for _ in $(seq 0 "$repeats"); do files+=("$film"); done
    target/release/cxr-appliance classify --model "$models/vit_b16_$size.onnx" \
      --params "$models/vit_b16_$size.toml" --threads "$threads" --state-dir "$work/state" \
      "${files[@]}" >"$work/appliance_${size}_${threads}.jsonl" 2>"$work/appliance.log" || true
  done
done
"$venv/bin/python" benches/python_study.py "$film" "$models" "$sizes" "$repeats" >"$work/python.json"
openvino_c=$(ls "$venv"/lib/python3*/site-packages/openvino/libs/libopenvino_c.so* | head -1)
if grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  target/release/examples/reduced_precision_views "$openvino_c" "$sizes" "$repeats" >"$work/reduced.json"
else
  echo '{}' >"$work/reduced.json"
fi

"$venv/bin/python" - "$sizes" "$work" <<'PY'
import json, statistics, sys
sizes = [int(s) for s in sys.argv[1].split(",")]
work = sys.argv[2]
py = json.load(open(f"{work}/python.json"))
reduced = json.load(open(f"{work}/reduced.json"))
runtimes = [r for r in ("onnxruntime-f32", "openvino-f32", "openvino-bf16") if f"view/{r}/{sizes[0]}px/1thread" in py]

def appliance(size, threads):
    lines = [json.loads(l) for l in open(f"{work}/appliance_{size}_{threads}.jsonl")][1:]
    assert lines and all(l["outcome"] in ("decision", "undecided") for l in lines), lines[:1]
    t = [l["timings_ms"] for l in lines]
    study = [x["decode"] + x["content_gate"] + x["preprocess"] + 5 * x["inference_per_view"] + x["decision"] for x in t]
    return {
        "study": statistics.median(study) / 1e3,
        "view": statistics.median(x["inference_per_view"] for x in t) / 1e3,
        "to_input": statistics.median(x["decode"] + x["preprocess"] for x in t) / 1e3,
    }

print(f"| size | threads | what | appliance (tract f32) | " + " | ".join(f"Python + {r}" for r in runtimes) + " | appliance / Python+onnxruntime |")
print("|---|---|---|---|" + "---|" * len(runtimes) + "---|")
results = {}
for size in sizes:
    for threads in (1, 2):
        a = appliance(size, threads)
        results[(size, threads)] = a
        for what in ("study", "view"):
            row = [py[f"{what}/{r}/{size}px/{threads}thread"] for r in runtimes]
            print(f"| {size} | {threads} | {'whole study' if what == 'study' else 'one view, inference'} | {a[what]*1e3:.0f} ms | "
                  + " | ".join(f"{v*1e3:.0f} ms" for v in row) + f" | {a[what]/row[0]:.2f} |")
for size in sizes:
    for threads in (1, 2):
        key = f"{size}px/{threads}thread"
        if f"view/{key}" in reduced:
            v, p = reduced[f"view/{key}"], py[f"view/openvino-bf16/{key}"]
            print(f"| {size} | {threads} | one view, appliance openvino-bf16 engine | {v*1e3:.0f} ms | | | {p*1e3:.0f} ms | {v/p:.2f} (vs Python + openvino-bf16) |")
for key, summary in sorted(reduced.items()):
    if key.startswith("self_test/"):
        print(f"{key}: {summary}")
for size in sizes:
    a = results[(size, 2)]
    print(f"RG1 J2K lossless to model input @{size} 2threads: appliance {a['to_input']*1e3:.0f} ms, "
          f"pydicom full decode alone {py['decode/pydicom']*1e3:.0f} ms, ratio {a['to_input']/py['decode/pydicom']:.2f}")
print(f"onnxruntime {py['onnxruntime_version']}, openvino {py.get('openvino_version', 'absent')}, pydicom {py['pydicom_version']}")
top = max(sizes)
bf16 = f"view/openvino-bf16/{top}px/2thread"
if f"view/{top}px/2thread" in reduced:
    print(f"reduced precision per view appliance/openvino-bf16 @{top} 2threads: {reduced[f'view/{top}px/2thread'] / py[bf16]:.2f}")
else:
    print("this CPU has no bf16 arithmetic: no reduced-precision figure")
print(f"study time appliance/python @{top} 2threads: {results[(top, 2)]['study'] / py[f'study/onnxruntime-f32/{top}px/2thread']:.2f}")
PY
