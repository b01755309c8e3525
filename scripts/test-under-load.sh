#!/usr/bin/env bash
# `make test-under-load`: the api suite (the process-level tests: the
# functions over HTTP, the Lambda path, real Redis and PostgreSQL) run
# RUNS times (10) with plain `cargo test`, the runner of a machine without
# cargo-nextest, which runs a binary's tests as threads of one process,
# while busy loops keep every core loaded. Prints each run's result and,
# last, how many of the runs passed; exits non-zero if any failed.
# LOAD_RUNS=1 makes a short version.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${LOAD_RUNS:-10}
# shellcheck source=scripts/services.sh
source scripts/services.sh all || exit 1
echo "test-under-load: building the workspace" >&2
cargo build --workspace --bins --tests
cores=$(nproc)
busy=()
stop_load() {
  [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true
}
trap stop_load EXIT
for _ in $(seq "$cores"); do
  # A shell that never sleeps: one core's worth of load, stopped by its PID.
  bash -c 'while :; do :; done' &
  busy+=("$!")
done
echo "test-under-load: $cores busy loops (PIDs ${busy[*]}); the api suite $runs times under cargo test" >&2
passed=0
failed=0
logs=$(mktemp -d /tmp/tms-under-load.XXXXXX)
for run in $(seq "$runs"); do
  start=$SECONDS
  if cargo test -p tests --test api --no-fail-fast >"$logs/run-$run.log" 2>&1; then
    passed=$((passed + 1))
    verdict=passed
  else
    failed=$((failed + 1))
    verdict="FAILED ($logs/run-$run.log)"
    grep -E '^test .* FAILED$|^    [a-z_:]+$' "$logs/run-$run.log" | head -20 >&2 || true
  fi
  summary=$(grep -E '^test result:' "$logs/run-$run.log" | tail -1 || true)
  echo "run $run: $verdict in $((SECONDS - start)) s: ${summary:-no result line}" >&2
done
stop_load
busy=()
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "api suite under load (cargo test, $cores busy loops): $passed of $runs runs passed"
[ "$failed" -eq 0 ]
