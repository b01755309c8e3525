#!/usr/bin/env bash
# Runs one of the tools' programs (tms-token, tms-verify, ...): the binary that
# `make run` or an earlier call built when it is up to date, else a build of it
# first, with cargo's progress visible (so waiting on another build's lock
# shows as "Blocking waiting for file lock", never as silence).
#
#   scripts/tool.sh tms-token user alice
#
# Progress goes to stderr; the program's own output is all that reaches stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/tool.sh <tms-token|tms-verify|...> [args...]}"
shift
bin="${CARGO_TARGET_DIR:-target}/debug/$name"
stale() {
  [ -x "$bin" ] || return 0
  # Any source, manifest, lock file or migration newer than the binary.
  [ -n "$(find . \( -path ./target -o -path ./.git -o -path ./.data -o -path ./dist \) -prune -o \
    \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name '*.sql' \) -newer "$bin" -print -quit)" ]
}
if stale; then
  command -v cargo >/dev/null || { echo "$name: cargo is missing: install Rust from https://rustup.rs and run again" >&2; exit 1; }
  echo "building $name (a first build takes several minutes; later ones seconds)" >&2
  cargo build -p tools --bin "$name" >&2
fi
exec "$bin" "$@"
