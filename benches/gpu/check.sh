#!/usr/bin/env bash
# The GPU machine's one call (issue 6): kernels and forward against their
# references, then timings against PyTorch on the same GPU. Under 8 minutes.
#
# Prepare here (no Rust on the GPU machine):
#   bash benches/gpu/prepare.sh          # builds target/gpu/{cxr-cuda-check,cxr-trainer}
# Then one device call:
#   run(command="bash benches/gpu/check.sh", carry=["target/gpu"], timeout_s=540)
# Prints JSON lines as it goes and a Markdown table last; copy the table to
# benches/README.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/cxr-gpu-check}
mkdir -p "$out"
work=/tmp/cxr-gpu-work
mkdir -p "$work"
log="$out/check.jsonl"
: > "$log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# libcublasLt and libnvrtc: the system's, else PyTorch's wheels.
py_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("nvidia/*/lib",):
        dirs.update(glob.glob(os.path.join(sp, pat)))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:${py_libs}"
rc=0
CXR_CHECK_DIR="$work" timeout 300 target/gpu/cxr-cuda-check | tee -a "$log" || rc=$?
echo "cxr-cuda-check exit $rc"
timeout 150 python3 benches/gpu/torch_vit.py "$work" | tee -a "$log" || echo "torch_vit.py exit $?"
if [ -x target/gpu/cxr-trainer ] && [ "${CXR_SKIP_TRAIN:-0}" != 1 ]; then
  # Training step (issue 5): burn CUDA f32 vs PyTorch, ViT-B/16 224, batch 32.
  timeout 120 target/gpu/cxr-trainer bench-step --backend cuda --preset vit-b16 --image-size 224 --batch 32 --steps 5 | tee -a "$out/train_step.jsonl" || echo "bench-step exit $?"
  # bf16 mixed precision (optim.precision = "bf16"), same shape.
  timeout 90 target/gpu/cxr-trainer bench-step --backend cuda --precision bf16 --preset vit-b16 --image-size 224 --batch 32 --steps 5 | tee -a "$out/train_step.jsonl" || echo "bench-step bf16 exit $?"
  timeout 60 python3 benches/gpu/torch_train_step.py --preset vit_b16 --image-size 224 --batch 32 --steps 5 | tee -a "$out/train_step.jsonl" || true
fi
python3 benches/gpu/table.py "$log" "$out/train_step.jsonl" | tee "$out/table.md"
exit $rc
