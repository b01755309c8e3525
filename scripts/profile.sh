#!/usr/bin/env bash
# `make profile`: where each function's CPU goes under `make bench`'s load.
# Builds the bench's binaries with symbols (Cargo.toml's `profiling` profile:
# the release build, not stripped, with line tables), runs `make bench`'s
# scenarios on them, and attaches `perf record` to each function for its
# whole life. Prints each function's hottest symbols (self time) and leaves
# the recordings in target/profiling/perf/ for `perf report -i ...`.
# The figures the bench prints during a profile are slowed by perf: read
# them from `make bench`, not from here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh bench perf
echo "profile: building with symbols (cargo's progress below)" >&2
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
cargo build --profile profiling "${DEPLOY_BUILD_ARGS[@]}"
cargo build --profile profiling -p loadtest --bin tms-bench --bin tms-ceiling
out=target/profiling/perf
rm -rf "$out" && mkdir -p "$out"
bin=$(pwd)/target/profiling

# Attach to each function the moment the bench starts it (cpu-clock: these
# machines' VMs may offer no hardware counters; DWARF stacks: the release
# code keeps no frame pointers).
# A function the bench does not run (BENCH_ONLY) is never attached to.
attach() {
  local name=$1 pid
  until pid=$(pgrep -n -f "^$bin/$name\$"); do
    [ -e "$out/.bench-done" ] && return 0
    sleep 0.01
  done
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" \
    -o "$out/$name.data" >/dev/null 2>&1 || true
}
for name in "${FUNCTION_NAMES[@]}"; do attach "$name" & done
BENCH_BIN_DIR=$bin "$bin/tms-bench" | grep -E '^(==|/health|sso-login|conversations)' || true
touch "$out/.bench-done"
wait
for name in "${FUNCTION_NAMES[@]}"; do
  [ -s "$out/$name.data" ] || continue
  echo
  echo "== $name: hottest symbols, self time ($out/$name.data)"
  perf report -i "$out/$name.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +$//' | head -40 || true  # head closes the pipe early (SIGPIPE)
done
