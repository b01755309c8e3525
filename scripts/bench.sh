#!/usr/bin/env bash
# `make bench`: builds the functions in release and prints sizes, start-up time
# and latencies against the machine's PostgreSQL and Redis. Figures only: the
# machine is shared and noisy, so nothing here passes or fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh all
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
packages=()
for f in "${FUNCTION_NAMES[@]}"; do packages+=(-p "$f"); done
cargo build --release --quiet "${packages[@]}"
cargo run --quiet -p tools --bin tms-bench
