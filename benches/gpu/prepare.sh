#!/usr/bin/env bash
# Build the binaries the GPU check carries (run here, on the CPU machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
# cudarc's bindings for CUDA 12.8: they load on any 12.x or newer driver
# (the default, with no toolkit here, would be the newest, 13.x).
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-12080}
cargo build --release -p cxr-cuda --bin cxr-cuda-check
cargo build --release -p cxr-trainer --features cuda
mkdir -p target/gpu
cp target/release/cxr-cuda-check target/release/cxr-trainer target/gpu/
# The carry limit is 64 MiB for everything.
strip target/gpu/* 2>/dev/null || true
ls -la target/gpu
du -ch target/gpu | tail -1
