#!/usr/bin/env bash
# The whole test suite. Fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
echo "== conformance (aws-cli + boto3 against berth server)"
# The berth binary nextest built for crates/cli/tests: a separate
# `cargo build -p berth` would resolve features without the tests'
# dev-dependencies (tokio's test-util) and compile most crates again.
# The slowest tests are listed, so that the suite stays lean.
#
# test_autoscaling.py spends most of its six minutes waiting out alarm
# periods, so it runs in a lane of its own beside the rest (its server
# keeps no warm awsvpc addresses, so the lanes never claim the same subnet
# address on the one engine). Each lane has its own pytest base dir.
export BERTH_BIN="$PWD/target/debug/berth"
lane_log=$(mktemp)
lane_tmp=$(mktemp -d)
main_tmp=$(mktemp -d)
.venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$lane_tmp" --durations=5 \
  tests/conformance/test_autoscaling.py >"$lane_log" 2>&1 &
lane=$!
rc=0
.venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$main_tmp" --durations=15 \
  --ignore=tests/conformance/test_autoscaling.py tests/conformance || rc=$?
lane_rc=0
wait "$lane" || lane_rc=$?
echo "== conformance lane: test_autoscaling.py"
cat "$lane_log"
rm -rf "$lane_log" "$lane_tmp" "$main_tmp"
if [ "$rc" -ne 0 ] || [ "$lane_rc" -ne 0 ]; then
  echo "conformance failed (main lane $rc, autoscaling lane $lane_rc)" >&2
  exit 1
fi
