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
# The emulator sets AWS_LAMBDA_MAX_CONCURRENCY (from --concurrency, default 1)
# for every function it starts; lambda_runtime then warns that its
# concurrency-tokio feature is off. The functions run one request at a time
# here as on Lambda, so cargo runs them without that variable: a runner that
# removes it. (Until the functions use lambda_http's run_concurrent.)
_lambda_host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
if [ -n "$_lambda_host" ]; then
  _lambda_var="CARGO_TARGET_$(echo "$_lambda_host" | tr 'a-z-' 'A-Z_')_RUNNER"
  export "$_lambda_var=env -u AWS_LAMBDA_MAX_CONCURRENCY"
fi
unset _lambda_host _lambda_var
