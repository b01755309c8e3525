#!/usr/bin/env bash
# `make watch`: every function under `cargo lambda watch`, the Lambda emulator,
# with the development settings of config/local.env. It listens on
# 127.0.0.1 only (WATCH_PORT, default 9000), rebuilds a function when its code
# changes, and routes http://127.0.0.1:9000/lambda-url/<function>/<path>:
#
#   curl 127.0.0.1:9000/lambda-url/health/health
set -euo pipefail
cd "$(dirname "$0")/.."
LAMBDA_WHO="make watch"
# shellcheck source=scripts/lambda-env.sh
source scripts/lambda-env.sh
mkdir -p .data
port="${WATCH_PORT:-9000}"
echo "make watch: the Lambda emulator on http://127.0.0.1:$port/lambda-url/<function>/<path>, e.g. curl 127.0.0.1:$port/lambda-url/health/health (a function builds on its first request; Ctrl-C stops)" >&2
exec cargo lambda watch --disable-cors --env-file config/local.env \
  --invoke-address 127.0.0.1 --invoke-port "$port"
