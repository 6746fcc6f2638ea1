#!/usr/bin/env bash
# STOW-RS under load, with the C-STORE path as the same-run baseline.
#
#   bash benches/http_load.sh [N] [K]
#
# Builds the release binary and makes 2N single-instance chest studies
# (copies of pydicom-data's RG1_UNCR with new UIDs, as serve_load.sh does).
# Starts `serve` on the demo bundle, then sends N studies over K concurrent
# STOW-RS clients (one study per request, operator token) and the other N
# over K concurrent storescu associations. For each path it prints:
#   - instances acknowledged per second (first send to last acknowledgement);
#   - latency to a stored acknowledgement (request sent to answer; for
#     C-STORE, the association's time over its instances): p50, p99;
#   - latency to a result (acknowledgement to the study's result file):
#     p50, p99;
# and the service's peak RSS over both. Needs dcmtk, python3 and the
# pydicom-data cache (the tests fetch it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
K=${2:-4}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build -q --release -p cxr-appliance
bin=target/release/cxr-appliance
src=.cache/pydicom-data-1.0.0/RG1_UNCR.dcm
[ -f "$src" ] || { echo "run the tests once first: $src is fetched by them" >&2; exit 1; }

mkdir -p "$work/stow" "$work/cstore"
for i in $(seq 1 "$N"); do
  for path in stow cstore; do
    f="$work/$path/$(printf %04d "$i").dcm"
    cp "$src" "$f"
    dcmodify -nb -gst -gse -gin "$f" >/dev/null
  done
done

"$bin" serve --bundle trainer/demo/demo-nih.cxrb --state-dir "$work/state" \
  --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --stable-s 0 \
  >"$work/ready" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 1 600); do [ -s "$work/ready" ] && break; sleep 0.2; done
[ -s "$work/ready" ] || { cat "$work/serve.err"; exit 1; }
dicom_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dicom"].rsplit(":",1)[1])' "$work/ready")
http_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"].rsplit(":",1)[1])' "$work/ready")
token=$("$bin" token create --role operator --label http_load --state-dir "$work/state" | tail -n 1)

# STOW-RS: K client threads, one study per request; each answer's time.
python3 - "$work" "$http_port" "$token" "$K" <<'EOF' > "$work/stow.times"
import glob, http.client, sys, threading, time
work, port, token, k = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
files = sorted(glob.glob(f"{work}/stow/*.dcm"))
boundary = "http-load-boundary"
out, lock = [], threading.Lock()
def send(mine):
    for f in mine:
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + open(f, "rb").read() + f"\r\n--{boundary}--\r\n".encode())
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        t0 = time.time()
        c.request("POST", "/dicomweb/studies", body, {
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        r = c.getresponse(); r.read()
        t1 = time.time()
        with lock:
            out.append((f, r.status, t0, t1))
threads = [threading.Thread(target=send, args=(files[i::k],)) for i in range(k)]
[t.start() for t in threads]; [t.join() for t in threads]
for f, status, t0, t1 in out:
    print(f, status, t0, t1)
EOF

# C-STORE: K storescu associations over the other N.
ls "$work"/cstore/*.dcm | awk -v k="$K" '{ print > ("'"$work"'/part" (NR % k)) }'
cstore_start=$(date +%s.%N)
for p in "$work"/part*; do
  ( s=$(date +%s.%N); xargs storescu -aec CXR_APPLIANCE 127.0.0.1 "$dicom_port" < "$p"; e=$(date +%s.%N); \
    echo "$(wc -l < "$p") $s $e" >> "$work/cstore.times" ) &
done
wait $(jobs -p | grep -v "^$serve_pid$") 2>/dev/null || true
# Every study's result.
for _ in $(seq 1 3000); do
  results=$( (ls "$work"/state/results/studies/*/v1.json 2>/dev/null || true) | wc -l)
  [ "$results" -ge $((2 * N)) ] && break
  sleep 0.2
done
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$serve_pid/status")
kill -TERM "$serve_pid"; wait "$serve_pid" || true

python3 - "$work" "$N" "$K" "$peak_kib" "$cstore_start" <<'EOF'
import glob, hashlib, json, os, sys
work, n, k, peak, cstore_start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
journal = [json.loads(l) for l in open(f"{work}/state/spool/journal.jsonl")]
def result_time(study):
    key = hashlib.sha256(study.encode()).hexdigest()[:32]
    files = glob.glob(f"{work}/state/results/studies/{key}/v1.json")
    return os.path.getmtime(files[0]) if files else None
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else float("nan")
stow = [l.split() for l in open(f"{work}/stow.times")]
stow_ok = [(f, float(t0), float(t1)) for f, s, t0, t1 in stow if s in ("200", "202")]
by_source = {"stow": [r for r in journal if r["source"].startswith("token:")],
             "cstore": [r for r in journal if not r["source"].startswith("token:")]}
rows = []
# STOW: ack latency per request; result latency from the ack.
acks = [t1 - t0 for _, t0, t1 in stow_ok]
span = max(t1 for _, _, t1 in stow_ok) - min(t0 for _, t0, _ in stow_ok)
results = []
ack_at = {os.path.basename(f): t1 for f, _, t1 in stow_ok}
for r in by_source["stow"]:
    t = result_time(r["study_instance_uid"])
    if t is not None:
        results.append(t - r["received_unix_ms"] / 1e3)
rows.append(("STOW-RS", len(stow_ok), len(stow_ok) / span, acks, results))
# C-STORE: per association, its span over its instances; results from arrival.
cs = [l.split() for l in open(f"{work}/cstore.times")]
per_instance = [(float(e) - float(s)) / max(1, int(c)) for c, s, e in cs]
cs_span = max(float(e) for _, _, e in cs) - cstore_start
cs_results = [result_time(r["study_instance_uid"]) - r["received_unix_ms"] / 1e3
              for r in by_source["cstore"] if result_time(r["study_instance_uid"]) is not None]
rows.append(("C-STORE (baseline)", len(by_source["cstore"]), len(by_source["cstore"]) / cs_span, per_instance, cs_results))
print("| path | instances | clients | acknowledged/s | ack p50 / p99 | to result p50 / p99 |")
print("|---|---|---|---|---|---|")
for name, count, rate, ack, res in rows:
    print(f"| {name} | {count} | {k} | {rate:.1f} | {q(ack,.5):.3f} / {q(ack,.99):.3f} s | {q(res,.5):.2f} / {q(res,.99):.2f} s |")
print(f"service peak RSS over both: {peak / 1024:.0f} MiB; STOW/C-STORE acknowledged/s ratio {rows[0][2] / rows[1][2]:.2f}")
EOF
