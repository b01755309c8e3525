#!/usr/bin/env bash
# The local environment of `make run` (and `make token`, `make watch`):
# development-only secrets and the embedded defaults, unless you set your own.
# These secrets are for a local run only; deployed functions read theirs from
# AWS Secrets Manager or the FC environment.
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
