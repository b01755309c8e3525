#!/usr/bin/env bash
# `make bench`: every function against what this machine allows (bare axum
# for /health, pgbench of each route's own SQL), in one run, as one table.
# Builds with the release profile that deploy builds use (a deploy build is
# reused), starts its own PostgreSQL and Redis on free ports, loads only
# 127.0.0.1. Figures only: the load generator shares the machine, so compare
# the ratios of one run; nothing here passes or fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh all
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench: installing wrk with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
  else
    echo "bench: wrk is missing: install it (e.g. sudo apt-get install wrk) and run again" >&2
    exit 1
  fi
fi
command -v pgbench >/dev/null || { echo "bench: pgbench is missing (it comes with PostgreSQL: apt-get install postgresql)" >&2; exit 1; }
# Only the binaries the bench runs (each release link does LTO, the slow
# part of a build here), with the features a `cargo build --release` of the
# workspace gives them: after one, this build only links, if anything.
echo "bench: building the release binaries (cargo's progress below; the first release build takes several minutes)" >&2
cargo build --release --bin health --bin sso-login --bin conversations \
  --bin tms-bench --bin tms-ceiling
exec target/release/tms-bench
