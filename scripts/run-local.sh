#!/usr/bin/env bash
# `make run`: serves every function on one port with the embedded defaults and
# no external service. Development-only secrets are set here unless you set
# your own; they are never used outside a local run.
set -euo pipefail
cd "$(dirname "$0")/.."
export LISTEN_HOST="${LISTEN_HOST:-127.0.0.1}"
export PORT="${PORT:-8000}"
export APP_ENV="${APP_ENV:-development}"
export JWT_SECRET="${JWT_SECRET:-local-development-jwt-secret-0123456789}"
export SSO_JWT_SECRET="${SSO_JWT_SECRET:-local-development-sso-secret-0123456789}"
export ALLOWED_ORIGINS="${ALLOWED_ORIGINS:-http://localhost:3000}"
export ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1}"
export RUST_LOG="${RUST_LOG:-info}"
mkdir -p .data
export DATABASE_URL="${DATABASE_URL:-sqlite://.data/tms.sqlite3}"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
echo "Serving health, sso-login and conversations on http://$LISTEN_HOST:$PORT (Ctrl-C stops)" >&2
exec cargo run --quiet -p tools --bin tms-local
