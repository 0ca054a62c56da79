#!/usr/bin/env bash
# Policy evaluation per request (issue 17, benchmark 9): Berth's evaluator
# and moto's, same ten documents, same questions, same run. Prints both JSON
# lines and the ratio of p99s; raw lines go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p berth-bench
mkdir -p bench/results
out=bench/results/policy-$(date +%Y%m%d-%H%M%S).jsonl
docs=$(mktemp)
trap 'rm -f "$docs"' EXIT
target/release/berth-bench-policy --docs "$docs" | tee -a "$out"
.venv/bin/python bench/policy.py "$docs" 30000 | tee -a "$out"
.venv/bin/python - "$out" <<'PY'
import json, sys
b, m = (json.loads(l) for l in open(sys.argv[1]))
print(f"\n| evaluator | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|")
for r in (b, m):
    print(f"| {r['name']} | {r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['p999_us']:.2f} |")
print(f"\nmoto p99 / Berth p99: {m['p99_us'] / b['p99_us']:.0f}x")
PY
