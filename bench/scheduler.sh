#!/usr/bin/env bash
# The pure scheduler at cluster scale (issue 3, benchmark b): 10,000
# instances, 100,000 placements with binpack on memory + distinctInstance +
# memberOf, one core. Three runs; prints a markdown table against the
# 50,000 placements/s target. Raw JSON lines go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p berth-bench --bin berth-bench-scheduler
mkdir -p bench/results
out=bench/results/scheduler-$(date +%Y%m%d-%H%M%S).jsonl
# Pinned to the last core: "on one core" is the target's condition.
core=$(( $(nproc) - 1 ))
for _ in 1 2 3; do
  taskset -c "$core" target/release/berth-bench-scheduler | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| run | instances | placements | seconds | placements/s | request (10 tasks) p50 us | p99 us | vs 50,000/s target |")
print("|---|---|---|---|---|---|---|---|")
for n, r in enumerate(rows, 1):
    print(f"| {n} | {r['instances']} | {r['placements']} | {r['seconds']:.3f} | {r['placements_per_sec']:.0f} | {r['request_p50_us']:.0f} | {r['request_p99_us']:.0f} | {r['placements_per_sec'] / 50000:.2f}x |")
PY
