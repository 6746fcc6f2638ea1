#!/usr/bin/env bash
# The long durability run: SIGKILL the service at KILLS moments during
# bursts of INSTANCES instances over three associations, then check that
# every acknowledged instance has its result and the PACS has exactly the
# SRs published. CI runs the same test with 3 kills and 24 instances.
#
#   bash benches/serve_durability.sh [KILLS] [INSTANCES]
set -euo pipefail
cd "$(dirname "$0")/.."
CXR_DURABILITY_KILLS=${1:-10} CXR_DURABILITY_INSTANCES=${2:-120} \
  cargo test -q --release -p cxr-appliance --test serve_durability acknowledged -- --nocapture
