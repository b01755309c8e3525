#!/usr/bin/env bash
# `make profile`: where each function's CPU goes under `make bench`'s load.
# Builds the bench's binaries with symbols (Cargo.toml's `profiling` profile:
# the release build, not stripped, with line tables), runs `make bench`'s
# scenarios on them, and attaches `perf record` to each function for its
# whole life. Prints each function's hottest symbols (self time) and leaves
# the recordings in target/profiling/perf/ for `perf report -i ...`.
# Beside it, `perf stat` counts each function's system calls and context
# switches, printed per request that process served (its access lines).
# The figures the bench prints during a profile are slowed by perf: read
# them from `make bench`, not from here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh bench perf
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
build_with_symbols profile
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
  # Where the kernel offers no syscall tracepoints, only the profile.
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" \
    -o "$out/$name.stat" >/dev/null 2>&1 &
  # This process's requests: the log's access lines when it exits (a later
  # process of the same name appends to the same log), counted at once
  # rather than after perf has written its files.
  (
    while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
    grep -c '"target":"access"' "$out/work/$name.log" >"$out/$name.requests" 2>/dev/null || true
  ) &
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" \
    -o "$out/$name.data" >/dev/null 2>&1 || true
  wait
}
for name in "${FUNCTION_NAMES[@]}"; do attach "$name" & done
BENCH_BIN_DIR=$bin BENCH_WORK_DIR=$out/work "$bin/tms-bench" | grep -E '^(==|/health|sso-login|conversations)' || true
touch "$out/.bench-done"
wait
for name in "${FUNCTION_NAMES[@]}"; do
  [ -s "$out/$name.data" ] || continue
  echo
  echo "== $name: hottest symbols, self time ($out/$name.data)"
  perf report -i "$out/$name.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +$//' | head -40 || true  # head closes the pipe early (SIGPIPE)
done

# System calls and context switches per request, each function's first process.
echo
echo "== system calls and context switches per request (perf stat; each function's first process)"
for name in "${FUNCTION_NAMES[@]}"; do
  requests=$(cat "$out/$name.requests" 2>/dev/null || true)
  [ "${requests:-0}" -gt 0 ] || continue
  # Counts are numbers, or perf's "<not supported>" / "<not counted>".
  awk -F, -v name="$name" -v requests="$requests" '
    index($3, "raw_syscalls:sys_enter") == 1 { calls = $1 }
    index($3, "context-switches") == 1 { switches = $1 }
    END {
      if (calls ~ /^[0-9]+$/ && switches ~ /^[0-9]+$/)
        printf "%-14s %8d requests  %6.2f system calls  %6.2f context switches per request\n", name, requests, calls / requests, switches / requests
      else
        printf "%-14s not counted (perf stat: no syscall tracepoints or no permission)\n", name
    }
  ' "$out/$name.stat" 2>/dev/null || echo "$name: not counted (perf stat left no figures)"
done
