#!/usr/bin/env bash
# CloudWatch's data path (issue 19, benchmark 11): PutMetricData
# datapoints per second into the metric store, and GetMetricData latency
# over a day of 10-second data, against Berth and moto_server (the peer)
# in the same run, on the same requests. Prints a table with ratios; raw
# JSON lines go to bench/results/.
#   bench/cloudwatch.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
secs=${1:-5}
rounds=${2:-3}
scripts/setup.sh
cargo build --release --locked -p berth -p berth-bench
mkdir -p bench/results
out=bench/results/cloudwatch-$(date +%Y%m%d-%H%M%S).jsonl
d=$(mktemp -d)
p_berth=18770; p_moto=18771
target/release/berth server --listen 127.0.0.1:$p_berth --data-dir "$d" --log warn --lb false &
berth_pid=$!
.venv/bin/moto_server -p $p_moto >/dev/null 2>&1 &
moto_pid=$!
trap 'kill $berth_pid $moto_pid 2>/dev/null; rm -rf "$d"' EXIT
for p in $p_berth $p_moto; do
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break || sleep 0.1; done
done
run=r$RANDOM
# The day first: the peer scans every datapoint it holds on a read, and
# the writes' millions would be what it measured.
for who in berth moto; do
  port=$([ $who = berth ] && echo $p_berth || echo $p_moto)
  target/release/berth-bench-metrics --target "http://127.0.0.1:$port" --name $who --op day \
    --metrics 10 --seconds "$secs" --run "$run-day" | tee -a "$out"
done
for r in $(seq "$rounds"); do
  for who in berth moto; do
    port=$([ $who = berth ] && echo $p_berth || echo $p_moto)
    target/release/berth-bench-metrics --target "http://127.0.0.1:$port" --name $who --op put \
      --clients 4 --batch 1000 --seconds "$secs" --run "$run-put-$r" | sed "s/^{/{\"round\":$r,/" | tee -a "$out"
  done
done
.venv/bin/python - "$out" <<'PY'
import json, sys
from statistics import median
rows = [json.loads(l) for l in open(sys.argv[1])]
put = {}
for r in rows:
    if r["op"] == "put":
        put.setdefault(r["round"], {})[r["name"]] = r
rounds = [x for x in put.values() if len(x) == 2]
b = median(x["berth"]["datapoints_per_s"] for x in rounds)
m = median(x["moto"]["datapoints_per_s"] for x in rounds)
ratio = median(x["berth"]["datapoints_per_s"] / x["moto"]["datapoints_per_s"] for x in rounds)
print("\n| PutMetricData, 4 clients, 1,000 datapoints a request | Berth datapoints/s | moto datapoints/s | Berth / moto | rounds |")
print("|---|---|---|---|---|")
print(f"| median | {b:.0f} | {m:.0f} | {ratio:.1f}x | {len(rounds)} |")
day = {r["name"]: r for r in rows if r["op"] == "day"}
print("\n| GetMetricData, a day of 10 s data in 1-minute periods | points | p50 ms | p99 ms | load s |")
print("|---|---|---|---|---|")
for who in ("berth", "moto"):
    d = day[who]
    print(f"| {who} | {d['points_returned']} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {d['load_seconds']:.1f} |")
print(f"\np99 ratio (moto / Berth): {day['moto']['p99_ms'] / day['berth']['p99_ms']:.1f}x")
print(f"errors: {sum(r.get('errors', 0) for r in rows)}")
PY
