#!/usr/bin/env bash
# Issue 20 benchmark: task-to-task latency and throughput across two hosts
# through the VPC tunnel against two tasks on one host (bench/overlay.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/overlay.py "$@"
