#!/usr/bin/env bash
# Issue 6 benchmarks: Berth's load balancer against HAProxy in front of the
# same targets, and a rolling deployment under load (bench/lb.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
if ! command -v haproxy >/dev/null || ! command -v wrk >/dev/null || ! command -v hey >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy wrk hey >/dev/null
fi
cargo build --release --locked -p berth -p berth-bench
BERTH_BIN=target/release/berth .venv/bin/python bench/lb.py "$@"
