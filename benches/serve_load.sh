#!/usr/bin/env bash
# The warm service against the cold CLI, on the same studies in one run.
#
#   bash benches/serve_load.sh [N] [K]
#
# Builds the release binary, makes N single-instance chest studies (copies
# of pydicom-data's RG1_UNCR, each with new study, series and instance UIDs),
# starts `serve` on the demo bundle with a dcmtk storescp as the PACS, and
# sends the N instances over K concurrent storescu associations. Then it
# classifies a sample of the same files with `classify`, one process per
# study, as a clinic's script would without the service. Prints:
#   - instances received per second (first send to last acknowledgement);
#   - time from an instance's arrival (its journal time, right after its
#     last PDU) to its SR's acknowledgement by the PACS: p50, p95, p99;
#   - the service's peak RSS;
#   - seconds per study, service and CLI, and their ratio. The service's
#     figure is first send to last study result written, over N (the
#     PACS's own speed is in the latency columns, not in the ratio).
# Needs dcmtk, python3 and the pydicom-data cache (the tests fetch it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-60}
K=${2:-4}
CLI_SAMPLE=${CLI_SAMPLE:-10}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build -q --release -p cxr-appliance
bin=target/release/cxr-appliance
src=.cache/pydicom-data-1.0.0/RG1_UNCR.dcm
[ -f "$src" ] || { echo "run the tests once first: $src is fetched by them" >&2; exit 1; }

mkdir -p "$work/studies" "$work/pacs"
for i in $(seq 1 "$N"); do
  f="$work/studies/$(printf %04d "$i").dcm"
  cp "$src" "$f"
  dcmodify -nb -gst -gse -gin "$f" >/dev/null
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pacs=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# --fork: one process per association, as a PACS takes several at once.
storescp --fork -od "$work/pacs" -aet PACS "$pacs" &
"$bin" serve --bundle trainer/demo/demo-nih.cxrb --state-dir "$work/state" \
  --listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 --stable-s 0 --forward "PACS@127.0.0.1:$pacs" \
  >"$work/ready" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 1 600); do [ -s "$work/ready" ] && break; sleep 0.2; done
[ -s "$work/ready" ] || { cat "$work/serve.err"; exit 1; }

start=$(date +%s.%N)
ls "$work"/studies/*.dcm | awk -v k="$K" '{ print > ("'"$work"'/part" (NR % k)) }'
senders=()
for p in "$work"/part*; do
  xargs storescu -aec CXR_APPLIANCE 127.0.0.1 "$port" < "$p" &
  senders+=($!)
done
wait "${senders[@]}"
received=$(date +%s.%N)
# Wait for every SR to be acknowledged by the PACS.
for _ in $(seq 1 3000); do
  delivered=$(grep -c '"op":"delivered"' "$work/state/outbox/journal.jsonl" 2>/dev/null || true)
  [ "${delivered:-0}" -ge "$N" ] && break
  sleep 0.2
done
done_at=$(date +%s.%N)
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$serve_pid/status")
kill -TERM "$serve_pid"; wait "$serve_pid" || true

cli_start=$(date +%s.%N)
for f in $(ls "$work"/studies/*.dcm | head -n "$CLI_SAMPLE"); do
  CXR_STATE_DIR="$work/cli-state" "$bin" classify --bundle trainer/demo/demo-nih.cxrb "$f" >/dev/null 2>&1 || true
done
cli_end=$(date +%s.%N)

python3 - "$work" "$N" "$K" "$start" "$received" "$done_at" "$peak_kib" "$cli_start" "$cli_end" "$CLI_SAMPLE" <<'EOF'
import glob, json, os, sys
work, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start, received, done, peak = map(float, sys.argv[4:8])
cli_start, cli_end, sample = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
arrived = {}
for line in open(f"{work}/state/spool/journal.jsonl"):
    r = json.loads(line)
    arrived[r["study_instance_uid"]] = r["received_unix_ms"]
outbox, delivered = {}, {}
for line in open(f"{work}/state/outbox/journal.jsonl"):
    r = json.loads(line)
    if r["op"] == "enqueue":
        outbox[r["id"]] = r["study_key"]
    elif r["op"] == "delivered":
        delivered[outbox[r["id"]]] = r["at_unix_ms"]
import hashlib
lat = sorted(delivered[hashlib.sha256(s.encode()).hexdigest()[:32]] - t for s, t in arrived.items()
             if hashlib.sha256(s.encode()).hexdigest()[:32] in delivered)
q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))] / 1e3
published = max(os.path.getmtime(f) for f in glob.glob(f"{work}/state/results/studies/*/*.json"))
service_per_study = (published - start) / n
cli_per_study = (cli_end - cli_start) / sample
print(f"| instances | associations | received/s | last PDU to SR at PACS p50 / p95 / p99 | peak RSS | service s/study | CLI s/study | CLI / service |")
print(f"|---|---|---|---|---|---|---|---|")
print(f"| {n} | {k} | {n / (received - start):.1f} | {q(.5):.2f} / {q(.95):.2f} / {q(.99):.2f} s | {peak / 1024:.0f} MiB | {service_per_study:.3f} | {cli_per_study:.3f} | {cli_per_study / service_per_study:.1f}x |")
print(f"({len(lat)} of {n} studies delivered; CLI timed on {sample} studies, one process each)")
EOF
