#!/usr/bin/env bash
# `make fuzz`: a fuzzing campaign, every target (or those named as arguments)
# for FUZZ_SECONDS each (default 60), one after another, with cargo-fuzz on
# the nightly toolchain. Each run starts from the committed corpus
# (fuzz/corpus/<target>/, read only) and keeps what it finds in fuzz/work/
# (not committed; `cargo fuzz cmin` it before copying a few inputs over).
# A crash is saved under fuzz/artifacts/<target>/ and fails the campaign.
# Prints one line of figures per target, for docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal ||
  { echo "fuzz: the nightly toolchain is missing and cannot be installed (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked ||
  { echo "fuzz: cargo-fuzz is missing and cannot be installed (cargo install cargo-fuzz --locked)" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# No sanitizer: the code is safe Rust (the C of SQLite is not instrumented
# either way), so ASan would only halve the executions; debug assertions
# (overflow checks) stay on.
build_flags=(--sanitizer none --debug-assertions)
cargo +nightly fuzz build "${build_flags[@]}"

summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "work/$target" "artifacts/$target"
  log="work/$target.log"
  echo "fuzz: $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "${build_flags[@]}" "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "work/$target" -type f | wc -l)
  result="no crash"
  if [ "$status" -ne 0 ]; then
    failed=1
    result="FAILED: $(grep -o 'Test unit written to .*' "$log" || echo "exit $status, see fuzz/$log")"
    tail -n 30 "$log" >&2
  fi
  summary+=("$target: $runs runs in ${seconds}s, coverage $coverage, $corpus inputs kept, $result")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
