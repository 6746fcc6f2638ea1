#!/usr/bin/env bash
# The service left running: studies sent at a steady rate for MINUTES, with
# the result retention shortened to RETENTION minutes (inputs go as soon as
# delivered), a dcmtk storescp as the PACS. Reports the service's memory,
# open files, state-directory disk use and journal sizes at start (after
# the first retention period, when pruning has begun: the steady state),
# and at the end. A service that runs for years keeps them flat; the audit
# log alone grows (one record per inference, bounded by the board's cap).
#
#   bash benches/serve_soak.sh [MINUTES] [RETENTION] [PER_MINUTE]
#
# Defaults: 30 minutes, 2 minutes' retention, 20 studies a minute. Builds
# the release binary unless CXR_BIN names one. Needs dcmtk, python3 and the
# pydicom-data cache (the tests fetch it).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
RETENTION=${2:-2}
PER_MINUTE=${3:-20}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if [ -z "${CXR_BIN:-}" ]; then
  cargo build -q --release -p cxr-appliance
  CXR_BIN=target/release/cxr-appliance
fi
src=.cache/pydicom-data-1.0.0/RG1_UNCR.dcm
[ -f "$src" ] || { echo "run the tests once first: $src is fetched by them" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
pacs=$(free_port)
mkdir -p "$work/pacs" "$work/out"
storescp --fork -od "$work/pacs" -aet PACS "$pacs" &
retention_days=$(python3 -c "print($RETENTION / 1440)")
"$CXR_BIN" serve --bundle trainer/demo/demo-nih.cxrb --state-dir "$work/state" \
  --listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 --stable-s 1 \
  --forward "PACS@127.0.0.1:$pacs" --retain-hours 0 --retention-days "$retention_days" \
  >"$work/ready" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 1 900); do [ -s "$work/ready" ] && break; sleep 0.2; done
[ -s "$work/ready" ] || { cat "$work/serve.err"; exit 1; }

size() { stat -c %s "$1" 2>/dev/null || echo 0; }
snapshot() {
  local s="$work/state"
  printf 'soak: %s minute=%s rss_kib=%s fds=%s state_bytes=%s spool_journal=%s retired_journal=%s outbox_journal=%s publication_log=%s result_files=%s audit_bytes=%s pacs_files=%s\n' \
    "$1" "$2" \
    "$(awk '/VmRSS/ { print $2 }' "/proc/$serve_pid/status")" \
    "$(ls "/proc/$serve_pid/fd" | wc -l)" \
    "$(du -sb "$s" | cut -f1)" \
    "$(size "$s/spool/journal.jsonl")" "$(size "$s/spool/retired.jsonl")" \
    "$(size "$s/outbox/journal.jsonl")" "$(size "$s/results/publications.jsonl")" \
    "$(find "$s/results" -type f | wc -l)" \
    "$(du -sb "$s/audit" | cut -f1)" \
    "$(ls "$work/pacs" | wc -l)"
}

snapshot begin 0
began=$(date +%s)
steady_at=$((began + (RETENTION + 1) * 60))
end_at=$((began + MINUTES * 60))
gap=$(python3 -c "print(60 / $PER_MINUTE)")
sent=0
steady_taken=0
while [ "$(date +%s)" -lt "$end_at" ]; do
  f="$work/out/film.dcm"
  cp "$src" "$f"
  dcmodify -nb -gst -gse -gin "$f" >/dev/null
  storescu -aec CXR_APPLIANCE 127.0.0.1 "$port" "$f" >/dev/null 2>&1 && sent=$((sent + 1))
  if [ "$steady_taken" = 0 ] && [ "$(date +%s)" -ge "$steady_at" ]; then
    snapshot start $(( ($(date +%s) - began) / 60 ))
    steady_taken=1
  fi
  sleep "$gap"
done
# Let the last studies publish and deliver.
sleep 20
snapshot end "$MINUTES"
published=$(grep -c '"event":"study_published"' "$work/serve.err" || true)
pruned=$(python3 -c "
import json,sys
n=0
for line in open('$work/serve.err'):
    e=json.loads(line)
    if e.get('event')=='results_pruned': n+=e['studies']
print(n)")
faults=$(grep -c '"event":"worker_fault"' "$work/serve.err" || true)
echo "soak: sent=$sent published=$published pruned_studies=$pruned worker_faults=$faults minutes=$MINUTES retention_minutes=$RETENTION"
kill -TERM "$serve_pid"; wait "$serve_pid" || true
