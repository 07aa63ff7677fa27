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

# The Solidity toolchain (solcjs, Foundry) from npm, pinned by package-lock.json.
if [ ! -x node_modules/.bin/solcjs ] || ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null; then
  npm ci --no-audit --no-fund
fi
export VERIML_SOLC="$PWD/scripts/solc"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== forge fmt --check"
node_modules/.bin/forge fmt --check
echo "== forge test"
node_modules/.bin/forge test
node_modules/.bin/forge snapshot --check verifier-contracts/.gas-snapshot
