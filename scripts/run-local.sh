#!/usr/bin/env bash
# `make run`: every function on one port with the embedded defaults and no
# external service (scripts/local-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
# shellcheck disable=SC1091
source scripts/local-env.sh
echo "Serving health, sso-login and conversations on http://$LISTEN_HOST:$PORT (Ctrl-C stops)" >&2
exec cargo run --quiet -p tools --bin tms-local
