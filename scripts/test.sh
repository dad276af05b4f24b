#!/usr/bin/env bash
# Runs every check CI runs: install what is missing, formatting, lints, then all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (every binary the integration tests run)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
