#!/usr/bin/env bash
# Issue 4 benchmarks: services against Docker Swarm (bench/services.py).
# Arguments pick benchmarks (a b c d; default all). Leaves the engine out of
# swarm mode if it was not in it before.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth
BERTH_BIN=target/release/berth .venv/bin/python bench/services.py "$@"
