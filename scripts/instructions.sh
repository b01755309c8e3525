#!/usr/bin/env bash
# `make instructions`: each function's instructions per request under `make
# bench`'s load (BENCH_ONLY=login by default: /health and the login), counted
# by valgrind's callgrind on the binaries of `make profile`. Time per request
# moves 10 % or more between runs on a shared machine; this count is the
# same for the same code and the same requests, so a change to the hot path
# shows up here even where the bench cannot see it. It counts user space
# only, every thread of the process (the log's thread too), from the moment
# the function listens to its exit: the kernel's share (system calls,
# wake-ups) is `make profile`'s perf stat. Under callgrind a function runs
# some fifty times slower, so the bench's own figures during this run mean
# nothing; the counts and the requests are what is read.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh bench valgrind
echo "instructions: building with symbols (cargo's progress below)" >&2
# shellcheck source=scripts/functions.sh
source scripts/functions.sh
cargo build --profile profiling "${DEPLOY_BUILD_ARGS[@]}"
cargo build --profile profiling -p loadtest --bin tms-bench --bin tms-ceiling
bin=$(pwd)/target/profiling
out=$bin/callgrind
rm -rf "$out" && mkdir -p "$out/bin" "$out/work"
ln -s "$bin/tms-bench" "$bin/tms-ceiling" "$out/bin/"

# The bench starts each function from $out/bin: there, a script that runs it
# under callgrind, instrumented from when it listens (its start is not a
# request's), and stops it with SIGTERM when the bench kills the script
# (callgrind writes its counts at exit, which SIGKILL would prevent).
for name in "${FUNCTION_NAMES[@]}"; do
  cat >"$out/bin/$name" <<WRAPPER
#!/usr/bin/env bash
valgrind --tool=callgrind --instr-atstart=no --log-file="$out/$name.%p.valgrind.log" --callgrind-out-file="$out/$name.%p.out" "$bin/$name" "\$@" &
function=\$!
wrapper=\$\$
(
  until (exec 3<>"/dev/tcp/127.0.0.1/\${FC_CUSTOM_LISTEN_PORT:?}") 2>/dev/null; do sleep 0.05; done
  callgrind_control -i on "\$function" >/dev/null
  while kill -0 "\$wrapper" 2>/dev/null; do sleep 0.05; done
  kill -TERM "\$function" 2>/dev/null
) &
wait "\$function"
WRAPPER
  chmod +x "$out/bin/$name"
done

export BENCH_ONLY=${BENCH_ONLY:-login}
echo "instructions: make bench's load (BENCH_ONLY=$BENCH_ONLY) under callgrind, about two minutes" >&2
BENCH_BIN_DIR=$out/bin BENCH_WORK_DIR=$out/work "$bin/tms-bench" >"$out/bench.txt" 2>&1 ||
  { echo "instructions: the bench failed; its output is in $out/bench.txt" >&2; exit 1; }
# The last wrapper's watcher stops its function a moment after the bench ends.
for _ in $(seq 100); do pgrep -f "valgrind --tool=callgrind .*$out" >/dev/null || break; sleep 0.1; done

echo
echo "== instructions per request, user space, callgrind ($out/*.out: callgrind_annotate --inclusive=yes FILE)"
for name in "${FUNCTION_NAMES[@]}"; do
  compgen -G "$out/$name.*.out" >/dev/null || continue
  requests=$(grep -c '"target":"access"' "$out/work/$name.log" || true)
  instructions=$(awk '/^summary:/ { sum += $2 } END { print sum + 0 }' "$out/$name".*.out)
  [ "${requests:-0}" -gt 0 ] || { echo "$name: no requests served"; continue; }
  # A function that served several routes gets their average over this
  # run's mix, which moves with each route's speed: said beside it (routes
  # of under 1 % of its requests, such as a readiness probe, left out).
  mix=$(awk '/"target":"access"/ {
      match($0, /"method":"[A-Z]+"/); m = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /"route":"[^"]*"/); r = substr($0, RSTART + 9, RLENGTH - 10)
      n[m " " r]++; total++ }
    END { for (k in n) if (n[k] * 100 >= total) { kinds++; s = s (s ? ", " : "") n[k] " " k }
      if (kinds > 1) print "(a mix: " s ")" }' \
    "$out/work/$name.log")
  awk -v name="$name" -v n="$requests" -v ir="$instructions" -v mix="$mix" \
    'BEGIN { printf "%-14s %8d requests  %9.0f instructions per request %s\n", name, n, ir / n, mix }'
done | tee "$out/per-request.txt"
awk '$1 == "health" { health = $4 } $1 == "sso-login" { login = $4 }
  END { if (health > 0 && login > 0) printf "a login / a /health request: %.2f (the CPU target is 3, in time)\n", login / health }' "$out/per-request.txt"
