#!/usr/bin/env bash
# Issue 20 benchmarks: Fargate tasks on gVisor against hardened containers and
# EC2 tasks on one `berth up`, and workloads in gVisor against runc
# (bench/isolation.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/isolation.py "$@"
