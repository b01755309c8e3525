#!/usr/bin/env bash
# Sourced by scripts/bench.sh and scripts/profile.sh: FUNCTION_NAMES, the
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
