#!/usr/bin/env bash
# Issue 5 benchmarks: the FARGATE launch type against EC2 mode on the same
# `berth up`, image and engine (bench/fargate.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/fargate.py "$@"
