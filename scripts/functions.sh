#!/usr/bin/env bash
# Sourced by scripts/bench.sh, profile.sh and instructions.sh: FUNCTION_NAMES, the
# deploy units of functions/LIST in its order, and DEPLOY_BUILD_ARGS, cargo's
# arguments for building them as deployed, both from `cargo xtask` (the one
# reader of the list: xtask/src/functions.rs).
_xtask_lines() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo xtask "$1"); }
mapfile -t FUNCTION_NAMES < <(_xtask_lines functions)
mapfile -t DEPLOY_BUILD_ARGS < <(_xtask_lines deploy-build-args)
unset -f _xtask_lines
if [ "${#FUNCTION_NAMES[@]}" -eq 0 ] || [ "${#DEPLOY_BUILD_ARGS[@]}" -eq 0 ]; then
  echo "scripts/functions.sh: cargo xtask functions / deploy-build-args failed (see above)" >&2
  exit 1
fi

# The bench's binaries with symbols (Cargo.toml's `profiling` profile: the
# release build, not stripped, with line tables) in target/profiling, for
# make profile and make instructions; $1 names the caller in the message.
build_with_symbols() {
  echo "$1: building with symbols (cargo's progress below)" >&2
  cargo build --profile profiling "${DEPLOY_BUILD_ARGS[@]}"
  cargo build --profile profiling -p loadtest --bin tms-bench --bin tms-ceiling
}
