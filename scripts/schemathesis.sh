#!/usr/bin/env bash
# `make schemathesis`: schemathesis (PyPI) sends generated requests, valid and
# invalid, to every route of docs/openapi.json on tms-local (all functions on
# one free port, a fresh embedded database, an API token of a user in it, so
# the protected routes are tested past authentication) and fails on any
# server error or any status code, content type, header or body that the
# document does not describe. Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per
# operation and phase (500: about a minute), and the stateful phase follows
# the link from a created conversation to its fetch. Exits non-zero on any failure.
# The sign-out operations end the token they are sent with, so each runs
# last, in a run of its own (no stateful phase: no link leads on from a
# sign-out) with a token of its own: the first run keeps its token working
# from start to end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "schemathesis: installing it from PyPI" >&2
  python3 -m pip install --quiet schemathesis 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages schemathesis 2>/dev/null ||
    { echo "schemathesis: cannot install it: run python3 -m pip install schemathesis" >&2; exit 1; }
fi

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The local settings of `make run` (config/local.env, applied by `cargo
# xtask local-env`), on a free port and a database of its own
# (SCHEMATHESIS_DATABASE_URL=postgres://... for an empty PostgreSQL database).
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL="${SCHEMATHESIS_DATABASE_URL:-sqlite://$work/tms.sqlite3}"
RUST_LOG="${RUST_LOG:-warn}"
export PORT DATABASE_URL RUST_LOG
local_env() { cargo xtask local-env -- "$@"; }
LISTEN_HOST=$(local_env printenv LISTEN_HOST)

cargo build --quiet -p tools --bin tms-local --bin tms-token --bin tms-migrate
local_env cargo run --quiet -p tools --bin tms-migrate >/dev/null
token=$(local_env cargo run --quiet -p tools --bin tms-token -- user schemathesis-user)
# `cargo xtask` and `cargo run` replace themselves with the program: $! is the server.
cargo xtask local-env -- cargo run --quiet -p tools --bin tms-local 2>"$work/server.log" &
server=$!
base="http://$LISTEN_HOST:$PORT"
for _ in $(seq 1 100); do
  if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "schemathesis: tms-local did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

# From the scratch folder, where schemathesis keeps its cache of failures.
document="$PWD/docs/openapi.json"
cd "$work"
# One run of schemathesis with this API token; extra arguments after it.
run_schemathesis() {
  local token="$1" report="$2" phases="$3"
  shift 3
  python3 -m schemathesis.cli run "$document" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --phases "$phases" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-500}" \
    --workers 2 \
    --generation-database none \
    --report-dir "$report" \
    --no-color \
    "$@"
}
reports="${SCHEMATHESIS_REPORT_DIR:-$work/report}"
run_schemathesis "$token" "$reports/routes" examples,coverage,fuzzing,stateful \
  --exclude-path-regex '^/api/v1/auth/logout' "$@"
for sign_out in /api/v1/auth/logout /api/v1/auth/logout/all; do
  sign_out_token=$(cd "$OLDPWD" && local_env cargo run --quiet -p tools --bin tms-token -- user schemathesis-user)
  run_schemathesis "$sign_out_token" "$reports/${sign_out//\//-}" examples,coverage,fuzzing \
    --include-path "$sign_out" "$@"
done
