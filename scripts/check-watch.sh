#!/usr/bin/env bash
# CI's check of the `cargo lambda watch` path: the Lambda emulator runs the
# functions as Lambda would and answers real requests, with the settings of
# `make watch`. Installs cargo-lambda (prebuilt, from PyPI) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
LAMBDA_WHO="check-watch"
# shellcheck source=scripts/lambda-env.sh
source scripts/lambda-env.sh
# The same build as `make test`'s, so the emulator starts the functions at once.
cargo build --workspace --bins --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p .data
log=$(mktemp)
# In a session of its own, so that stopping its process group stops the
# functions it started too. The settings are those of `make watch`.
setsid cargo lambda watch --quiet --disable-cors --ignore-changes --env-file config/local.env \
  --invoke-address 127.0.0.1 --invoke-port "$port" >"$log" 2>&1 &
watch_pid=$!
trap 'kill -TERM -- "-$watch_pid" 2>/dev/null || true; rm -f "$log"' EXIT
base="http://127.0.0.1:$port/lambda-url"
status() { curl -s -o /dev/null -m 120 -w '%{http_code}' "$@" || true; }
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.3; done
failed=0
check() { # name expected actual
  if [ "$2" = "$3" ]; then echo "check-watch: $1: $3 as expected"; else echo "check-watch: $1: got $3, expected $2" >&2; failed=1; fi
}
check "health through the emulator" 200 "$(status "$base/health/health")"
check "an invalid API token" 401 "$(status -H 'Authorization: Bearer invalid_token' "$base/conversations/api/v1/conversations/")"
check "a malformed SSO body" 422 "$(status -X POST -H 'Content-Type: application/json' -d '{}' "$base/sso-login/api/v1/auth/login/sso")"
warned=0
grep -q "concurrency-tokio feature is not enabled" "$log" && warned=1
check "no AWS_LAMBDA_MAX_CONCURRENCY warning from the functions" 0 "$warned"
if [ "$failed" != 0 ]; then tail -n 30 "$log" >&2; exit 1; fi
