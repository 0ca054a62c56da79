#!/usr/bin/env bash
# Control-plane API benchmark: Berth (release build, durable SQLite store) vs
# moto_server, same requests, same machine, same run. Prints a markdown table
# with ratios; raw JSON lines go to bench/results/.
#   bench/run.sh [seconds-per-cell]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
secs=${1:-5}
scripts/setup.sh
cargo build --release --locked -p berth -p berth-bench
mkdir -p bench/results
out=bench/results/api-$(date +%Y%m%d-%H%M%S).jsonl
data=$(mktemp -d)
port_b=18750; port_m=18751
target/release/berth server --listen 127.0.0.1:$port_b --data-dir "$data" --log warn &
berth_pid=$!
.venv/bin/moto_server -p $port_m >/dev/null 2>&1 &
moto_pid=$!
trap 'kill $berth_pid $moto_pid 2>/dev/null; rm -rf "$data"' EXIT
for p in $port_b $port_m; do
  for _ in $(seq 100); do curl -sf -o /dev/null -X POST "http://127.0.0.1:$p/" && break || sleep 0.1; done
done
run=r$RANDOM
for op in register describe list; do
  for c in 1 32; do
    for t in berth:$port_b moto:$port_m; do
      target/release/berth-bench --target "http://127.0.0.1:${t#*:}" --name "${t%%:*}" --op $op --clients $c \
        --seconds "$secs" --run "$run-$op-$c" | tee -a "$out"
    done
  done
done
.venv/bin/python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cell = {(r["name"], r["op"], r["clients"]): r for r in rows}
print("\n| operation | clients | Berth req/s | Berth p50 ms | Berth p99 ms | moto req/s | moto p50 ms | moto p99 ms | throughput ratio |")
print("|---|---|---|---|---|---|---|---|---|")
names = {"register": "RegisterTaskDefinition (durable write)", "describe": "DescribeTaskDefinition", "list": "ListTaskDefinitions"}
for op in ("register", "describe", "list"):
    for c in (1, 32):
        b, m = cell[("berth", op, c)], cell[("moto", op, c)]
        ratio = b["rps"] / m["rps"] if m["rps"] else float("inf")
        print(f"| {names[op]} | {c} | {b['rps']:.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {ratio:.1f}x |")
errs = sum(r["errors"] for r in rows if r["name"] == "berth")
print(f"\nBerth errors: {errs}")
PY
