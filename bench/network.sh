#!/usr/bin/env bash
# Issue 20 benchmark: a security group rule changed with the EC2 API
# reaching running tasks, EC2 awsvpc and FARGATE on gVisor side by side on
# one `berth up` (bench/network.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/network.py "$@"
