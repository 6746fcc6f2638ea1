#!/usr/bin/env bash
# Run the Rust ingest bench and the pydicom reference in one session and print
# a markdown table of medians and ratios. Usage: bash benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet pydicom numpy pylibjpeg pylibjpeg-openjpeg >/dev/null
cargo bench -p cxr-benches --bench ingest -- --noplot >/tmp/cxr-bench.log
dir=.cache/pydicom-data-1.0.0
python3 benches/pydicom_decode.py "$dir" >/tmp/cxr-pydicom.json
python3 - <<'PY'
import json, os
py = json.load(open("/tmp/cxr-pydicom.json"))
def crit(name):
    p = os.path.join("target/criterion/ingest", name.replace("/", "_"), "new/estimates.json")
    return json.load(open(p))["median"]["point_estimate"] / 1e9
print(f"| file | Rust read+normalise | Rust read+normalise+prepare 512 | Rust read for 512 + prepare 512 | pydicom {py['pydicom_version']} + pylibjpeg decode + modality LUT | Rust / pydicom | Rust for 512 + prepare / pydicom |")
print("|---|---|---|---|---|---|---|")
for name in ["RG1_UNCR", "RG1_J2KR"]:
    r, rp, p = crit(f"{name}/read"), crit(f"{name}/read+prepare512"), py[f"{name}/pydicom"]
    rr = crit(f"{name}/read-for-512+prepare512")
    print(f"| {name} | {r*1e3:.1f} ms | {rp*1e3:.1f} ms | {rr*1e3:.1f} ms | {p*1e3:.1f} ms | {r/p:.2f} | {rr/p:.2f} |")
PY
