#!/usr/bin/env bash
# Issue 18 benchmark 9: the credentials endpoint's latency, awslogs
# shipping throughput and write-to-search latency; see bench/logs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
command -v hey >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey </dev/null; }
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/logs.py
