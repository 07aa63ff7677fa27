#!/usr/bin/env bash
# Installs what the tests need and runs the whole test suite with the lints.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veriml-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The Rust toolchain is the only requirement so far; make sure its lint components are present.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
