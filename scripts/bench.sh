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
# part of a build here). The functions are built on their own, as deploy
# builds build them (their own features: no embedded database), then the
# bench's tools: built together, the tools' features would reach the
# functions' build too.
echo "bench: building the release binaries (cargo's progress below; the first release build takes several minutes)" >&2
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
cargo build --release "${DEPLOY_BUILD_ARGS[@]}"
cargo build --release -p loadtest --bin tms-bench --bin tms-ceiling
exec target/release/tms-bench
