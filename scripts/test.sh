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
BERTH_BIN="$PWD/target/debug/berth" .venv/bin/python -m pytest -q --durations=15 tests/conformance
