#!/usr/bin/env bash
# Issue 19 benchmark 11: a CPU load step to new tasks RUNNING, and 1,000
# queued messages at zero tasks to the first processed, with Berth's
# defaults and with AWS's timing side by side (bench/scaling.py).
#   bench/scaling.sh [a] [b]        RUNS=n for more rounds
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/scaling.py "$@"
