#!/usr/bin/env bash
# `make test`: builds once, then runs the whole suite. Works on a fresh machine
# with only Rust: what the suite needs (PostgreSQL, Redis, moto's Secrets
# Manager, the template checks' Python packages) is installed or started by
# scripts/services.sh, and cargo-nextest is used when present.
# Extra arguments go to the test runner: scripts/test.sh sso
# TEST_RUNNER=cargo takes the path of a machine without cargo-nextest
# (cargo test: each test binary's tests as threads of one process); CI runs
# the suite both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "make test: cargo is missing: install Rust from https://rustup.rs and run again" >&2; exit 1; }
# shellcheck source=scripts/services.sh
source scripts/services.sh all || exit 1
# The process-level tests start the function binaries themselves: build them
# all first, with cargo's progress (a first build takes several minutes).
echo "make test: building the workspace" >&2
start=$SECONDS
cargo build --workspace --bins --tests
echo "make test: built in $((SECONDS - start)) s; running the tests" >&2
if [ "${TEST_RUNNER:-}" != cargo ] && cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  [ "${TEST_RUNNER:-}" = cargo ] ||
    echo "make test: cargo-nextest not found, using cargo test (faster: cargo install cargo-nextest --locked)" >&2
  cargo test --workspace --no-fail-fast "$@"
fi
