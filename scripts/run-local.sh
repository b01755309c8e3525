#!/usr/bin/env bash
# `make run`: every function on one port (127.0.0.1:8000 unless LISTEN_HOST /
# PORT say otherwise) with the development settings of config/local.env
# (`cargo xtask local-env`) and no external service. Builds first, with
# cargo's progress visible, then runs the built binary itself, so the
# server's banner is the last thing printed before its request log.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "make run: cargo is missing: install Rust from https://rustup.rs and run again" >&2; exit 1; }
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
if [ ! -x "$bin_dir/tms-local" ]; then
  echo "make run: building tms-local, tms-token and tms-verify. The first build compiles every dependency and takes about 4 minutes on an idle 2-core machine; later ones take seconds." >&2
else
  echo "make run: building tms-local, tms-token and tms-verify (seconds when nothing changed)" >&2
fi
start=$SECONDS
cargo build -p tools --bin tms-local --bin tms-token --bin tms-verify
echo "make run: built in $((SECONDS - start)) s" >&2
exec cargo xtask local-env -- "$bin_dir/tms-local"
