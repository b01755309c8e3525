#!/usr/bin/env bash
# Sourced by scripts/watch.sh and scripts/check-watch.sh: makes sure
# cargo-lambda is installed (from PyPI, prebuilt) and prepares the environment
# that `cargo lambda watch` runs the functions in.
_lambda_fail() { echo "${LAMBDA_WHO:-cargo lambda}: $*" >&2; exit 1; }
command -v cargo >/dev/null || _lambda_fail "cargo is missing: install Rust from https://rustup.rs and run again"
if ! cargo lambda --version >/dev/null 2>&1; then
  command -v python3 >/dev/null ||
    _lambda_fail "cargo-lambda is missing and so is python3 to install it: apt-get install python3 python3-pip, then python3 -m pip install cargo-lambda"
  echo "installing cargo-lambda from PyPI (python3 -m pip install cargo-lambda)" >&2
  python3 -m pip install --quiet cargo-lambda 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages cargo-lambda 2>/dev/null ||
    python3 -m pip install --quiet --user cargo-lambda 2>/dev/null || true
  cargo lambda --version >/dev/null 2>&1 ||
    _lambda_fail "cargo-lambda is missing and could not be installed: run python3 -m pip install cargo-lambda (or cargo install cargo-lambda --locked) and make sure its bin directory is on PATH"
fi
