#!/usr/bin/env bash
# `make test`: builds once, then runs the whole suite. Works on a fresh machine
# with only Rust: the services the suite needs are installed or started by
# scripts/services.sh, and cargo-nextest is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
if [ -x scripts/services.sh ]; then
  # shellcheck disable=SC1091
  source scripts/services.sh
fi
# The process-level tests start the function binaries themselves.
cargo build --workspace --bins --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found: using cargo test (install it with: cargo install cargo-nextest --locked)" >&2
  cargo test --workspace --no-fail-fast "$@"
fi
