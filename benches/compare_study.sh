#!/usr/bin/env bash
# Whole studies, from DICOM bytes to decision: `cxr-appliance classify` against
# the Python stack (pydicom + pylibjpeg-openjpeg, numpy, then ONNX Runtime f32
# and OpenVINO f32 / bf16) on the same random-weight ViT-B/16 (seed 1), five
# TTA views, 1 and 2 threads, one after the other in one session.
#
# The appliance runs a signed benchmark bundle of that model
# (benches/examples/bench_bundle.rs) on each CPU engine a board can choose:
# tract in f32 (the default), OpenVINO in f32 and OpenVINO in bf16 (the
# library from the same OpenVINO wheel as the Python side; bf16 only where
# the CPU has it). Each engine passes the bundle's golden self-test first.
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
cargo build --release -q -p cxr-benches --example bench_bundle
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0 \
  numpy==2.4.6 onnxruntime==1.32.0 openvino==2026.4.1
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
target/release/examples/bench_bundle "$models" "$sizes"
openvino_c=$(ls "$PWD"/"$venv"/lib/python3*/site-packages/openvino/libs/libopenvino_c.so* | head -1)

# A development board profile per (engine, threads), trusting the benchmark key.
board() { # ENGINE THREADS -> path
  local path="$work/board-$1-$2.toml" extra=""
  case "$1" in
    openvino-f32) extra="openvino_library = \"$openvino_c\"" ;;
    openvino-bf16) extra="openvino_library = \"$openvino_c\"
cpu_precision = \"bf16\"" ;;
  esac
  "$venv/bin/python" - "$path" "$PWD/$models/trust" "$2" "$extra" <<'PY'
import re, sys
path, trust, threads, extra = sys.argv[1:]
text = open("board-config/boards/dev-x86.toml").read()
assert 'trust_dir = "trust"' in text, "dev-x86.toml no longer keeps its trust store at trust/"
text = text.replace('trust_dir = "trust"', f'trust_dir = "{trust}"')
engine = f'[engine]\npreference = "auto"\nthreads = {threads}\n{extra}\n\n'
text, n = re.subn(r"\[engine\]\n(?:[^\[\n][^\n]*\n)*\n?", engine, text, count=1)
assert n == 1, "dev-x86.toml has no [engine] section"
open(path, "w").write(text)
PY
  echo "$path"
}
engines="tract openvino-f32"
grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo && engines="$engines openvino-bf16"

# One classify process per (engine, size, threads), the film given
# REPEATS + 1 times; the first study warms up and is dropped.
for engine in $engines; do
  for size in ${sizes//,/ }; do
    for threads in 1 2; do
      files=()
      for _ in $(seq 0 "$repeats"); do files+=("$film"); done
      rc=0
      target/release/cxr-appliance classify --bundle "$models/vit_b16_$size.cxrb" \
        --board-file "$(board "$engine" "$threads")" --state-dir "$work/state-$engine-$size-$threads" \
        "${files[@]}" >"$work/appliance_${engine}_${size}_${threads}.jsonl" 2>"$work/appliance.log" || rc=$?
      # 0: all decided; 5: some undecided (random weights sit near 0.5).
      if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
        echo "classify failed on $engine @$size/$threads threads (exit $rc):" >&2
        cat "$work/appliance.log" >&2
        exit 1
      fi
    done
  done
done
"$venv/bin/python" benches/python_study.py "$film" "$models" "$sizes" "$repeats" >"$work/python.json"

"$venv/bin/python" - "$sizes" "$work" "$engines" <<'PY'
import json, statistics, sys
sizes = [int(s) for s in sys.argv[1].split(",")]
work, engines = sys.argv[2], sys.argv[3].split()
py = json.load(open(f"{work}/python.json"))
runtimes = [r for r in ("onnxruntime-f32", "openvino-f32", "openvino-bf16") if f"view/{r}/{sizes[0]}px/1thread" in py]

def appliance(engine, size, threads):
    lines = [json.loads(l) for l in open(f"{work}/appliance_{engine}_{size}_{threads}.jsonl")][1:]
    assert lines and all(l["outcome"] in ("decision", "undecided") for l in lines), lines[:1]
    ran = {l["engine"]["name"] for l in lines}
    assert ran == {engine}, f"asked for {engine}, ran {ran}: {lines[0]['engine']['reasons']}"
    t = [l["timings_ms"] for l in lines]
    study = [x["decode"] + x["content_gate"] + x["preprocess"] + 5 * x["inference_per_view"] + x["decision"] for x in t]
    return {
        "study": statistics.median(study) / 1e3,
        "view": statistics.median(x["inference_per_view"] for x in t) / 1e3,
        "to_input": statistics.median(x["decode"] + x["preprocess"] for x in t) / 1e3,
        "self_test": next(r for r in lines[0]["engine"]["reasons"] if r.startswith("self-test")),
    }

a = {(e, s, t): appliance(e, s, t) for e in engines for s in sizes for t in (1, 2)}
print("| size | threads | what | " + " | ".join(f"appliance {e}" for e in engines) + " | "
      + " | ".join(f"Python + {r}" for r in runtimes) + " | appliance tract / Python + onnxruntime |")
print("|---|---|---|" + "---|" * (len(engines) + len(runtimes) + 1))
for size in sizes:
    for threads in (1, 2):
        for what in ("study", "view"):
            mine = [a[(e, size, threads)][what] for e in engines]
            theirs = [py[f"{what}/{r}/{size}px/{threads}thread"] for r in runtimes]
            print(f"| {size} | {threads} | {'whole study' if what == 'study' else 'one view (inference)'} | "
                  + " | ".join(f"{v*1e3:.0f} ms" for v in mine + theirs) + f" | {mine[0]/theirs[0]:.2f} |")
for e in engines:
    for size in sizes:
        print(f"{e} @{size}: {a[(e, size, 2)]['self_test']}")
for size in sizes:
    x = a[("tract", size, 2)]["to_input"]
    print(f"RG1 J2K lossless to model input @{size} 2threads: appliance {x*1e3:.0f} ms, "
          f"pydicom full decode alone {py['decode/pydicom']*1e3:.0f} ms, ratio {x/py['decode/pydicom']:.2f}")
print(f"onnxruntime {py['onnxruntime_version']}, openvino {py.get('openvino_version', 'absent')}, pydicom {py['pydicom_version']}")
top = max(sizes)
base = py[f"study/onnxruntime-f32/{top}px/2thread"]
print(f"study time appliance-openvino-f32/python @{top} 2threads: {a[('openvino-f32', top, 2)]['study'] / base:.2f}")
if "openvino-bf16" in engines:
    y = a[("openvino-bf16", top, 2)]["view"] / py[f"view/openvino-bf16/{top}px/2thread"]
    print(f"reduced precision per view appliance/openvino-bf16 @{top} 2threads: {y:.2f}")
else:
    print("this CPU has no bf16 arithmetic: no reduced-precision figure")
print(f"study time appliance/python @{top} 2threads: {a[('tract', top, 2)]['study'] / base:.2f}")
PY
