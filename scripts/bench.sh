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
source scripts/services.sh bench
# Only the binaries the bench runs (each release link does LTO, the slow
# part of a build here), with the features a `cargo build --release` of the
# workspace gives them: after one, this build only links, if anything.
echo "bench: building the release binaries (cargo's progress below; the first release build takes several minutes)" >&2
cargo build --release --bin health --bin sso-login --bin conversations \
  --bin tms-bench --bin tms-ceiling
exec target/release/tms-bench
