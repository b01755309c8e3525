#!/usr/bin/env bash
# `make instructions`: each function's instructions per request under `make
# bench`'s load (BENCH_ONLY=login by default: /health and the login), counted
# by valgrind's callgrind on the binaries of `make profile`. Time per request
# moves 10 % or more between runs on a shared machine; this count moves
# about 1 % for the same code and the same load, so a change to the hot path
# shows up here even where the bench cannot see it. It counts user space
# only, every thread of the process (the log's thread too), from when
# counting is turned on, once the function listens, to its exit; the
# requests are those its log gained in between. The kernel's share (system
# calls, wake-ups) is `make profile`'s perf stat. Under callgrind a function
# runs some fifty times slower, so the bench's own figures during this run
# mean nothing; the counts and the requests are what is read.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh bench valgrind
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
build_with_symbols instructions
bin=$(pwd)/target/profiling
out=$bin/callgrind
rm -rf "$out" && mkdir -p "$out/bin" "$out/work"
ln -s "$bin/tms-ceiling" "$out/bin/"
fail() { echo "instructions: $*" >&2; exit 1; }
# Whatever way this ends, no function is left running under valgrind.
trap 'pkill -TERM -f -- "--callgrind-out-file=$out/" || true' EXIT

# The bench starts each function from $out/bin: there, a script that runs it
# under callgrind and a watcher beside it. The watcher turns counting on
# once the function listens (its start is not a request's), and notes how
# many requests the function's log held then and when the function ended:
# the requests counted are those in between (a login whose client left
# counts: its work was done). The bench kills the script with SIGKILL; the
# watcher then stops the function with SIGTERM, so that callgrind writes
# its counts (SIGKILL would leave none).
for name in "${FUNCTION_NAMES[@]}"; do
  {
    echo '#!/usr/bin/env bash'
    printf 'name=%q out=%q program=%q\n' "$name" "$out" "$bin/$name"
    cat <<'WRAPPER'
port=${FC_CUSTOM_LISTEN_PORT:?the bench gives each function its port}
served() { grep -c -e '"target":"access"' -e 'completed after its client left' "$out/work/$name.log" || true; }
valgrind --tool=callgrind --instr-atstart=no --log-file="$out/$name.%p.valgrind.log" \
  --callgrind-out-file="$out/$name.%p.out" "$program" "$@" &
function_pid=$!
wrapper_pid=$$
(
  # A listening socket is looked for, not connected to: a connection to a
  # port nobody listens on yet can connect to itself and take the port.
  until ss -Htln "sport = :$port" | grep -q .; do
    kill -0 "$function_pid" 2>/dev/null || exit 0
    kill -0 "$wrapper_pid" 2>/dev/null || { kill -TERM "$function_pid"; exit 0; }
    sleep 0.05
  done
  callgrind_control -i on "$function_pid" >/dev/null 2>&1 || exit 0
  served >"$out/$name.$function_pid.served-before"
  while kill -0 "$wrapper_pid" 2>/dev/null; do sleep 0.05; done
  kill -TERM "$function_pid" 2>/dev/null
  while kill -0 "$function_pid" 2>/dev/null; do sleep 0.05; done
  served >"$out/$name.$function_pid.served-by-end"
) &
wait "$function_pid"
WRAPPER
  } >"$out/bin/$name"
  chmod +x "$out/bin/$name"
done

export BENCH_ONLY=${BENCH_ONLY:-login}
echo "instructions: make bench's load (BENCH_ONLY=$BENCH_ONLY) under callgrind, about two minutes" >&2
BENCH_BIN_DIR=$out/bin BENCH_WORK_DIR=$out/work "$bin/tms-bench" >"$out/bench.txt" 2>&1 ||
  fail "the bench failed; its output is in $out/bench.txt"
# The last watcher stops its function a moment after the bench ends, and
# notes its requests once it has exited.
ended() {
  ! pgrep -f -- "--callgrind-out-file=$out/" >/dev/null || return 1
  local file pid
  for file in "$out"/*.out; do
    pid=${file%.out} && pid=${pid##*.}
    [ -e "${file%."$pid".out}.$pid.served-by-end" ] || return 1
  done
}
for _ in $(seq 100); do ended && break; sleep 0.1; done
ended || fail "a function under callgrind did not stop, or its watcher did not note its requests, within 10 s of the bench's end"

echo
echo "== instructions per request, user space, callgrind ($out/*.out: callgrind_annotate --inclusive=yes FILE)"
for name in "${FUNCTION_NAMES[@]}"; do
  compgen -G "$out/$name.*.out" >/dev/null || continue
  requests=0 instructions=0
  for file in "$out/$name".*.out; do
    pid=${file%.out} && pid=${pid##*.}
    [ -s "$out/$name.$pid.served-before" ] && [ -s "$out/$name.$pid.served-by-end" ] ||
      fail "$name (process $pid) was not counted from its start to its end (callgrind_control failed, or it never listened)"
    counted=$(awk '/^summary:/ { print $2 }' "$file")
    [ "${counted:-0}" -gt 0 ] || fail "$file has no instructions: counting never began"
    instructions=$((instructions + counted))
    requests=$((requests + $(cat "$out/$name.$pid.served-by-end") - $(cat "$out/$name.$pid.served-before")))
  done
  [ "$requests" -gt 0 ] || { echo "$name: no requests served while counted"; continue; }
  # A function that served several routes gets their average over this
  # run's mix, which moves with each route's speed: said beside it (routes
  # of under 1 % of its requests, such as a readiness probe, left out).
  mix=$(awk '/"target":"access"/ {
      match($0, /"method":"[A-Z]+"/); m = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /"route":"[^"]*"/); r = substr($0, RSTART + 9, RLENGTH - 10)
      n[m " " r]++; total++ }
    END { for (k in n) if (n[k] * 100 >= total) { kinds++; s = s (s ? ", " : "") n[k] " " k }
      if (kinds > 1) print " (a mix: " s ")" }' \
    "$out/work/$name.log")
  awk -v name="$name" -v n="$requests" -v ir="$instructions" -v mix="$mix" \
    'BEGIN { printf "%-14s %8d requests  %9.0f instructions per request%s\n", name, n, ir / n, mix }'
done | tee "$out/per-request.txt"
awk '$1 == "health" { health = $4 } $1 == "sso-login" { login = $4 }
  END { if (health > 0 && login > 0) printf "a login / a /health request: %.2f (the CPU target is 3, in time)\n", login / health }' "$out/per-request.txt"
