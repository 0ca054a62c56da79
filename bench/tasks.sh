#!/usr/bin/env bash
# Issue 3 benchmarks (a) RunTask -> RUNNING vs `docker run -d` and
# (c) agent memory with 50 running tasks; see bench/tasks.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/tasks.py
