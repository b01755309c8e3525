#!/usr/bin/env bash
# Sourced by the scripts: FUNCTION_NAMES, the deploy units of functions/LIST, in
# its order; DEPLOY_BUILD_ARGS, cargo's arguments for building them as
# deployed; fc_resource NAME gives a function's s.yaml resource name.
_functions_list="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/functions/LIST"
FUNCTION_NAMES=()
while IFS= read -r _fn || [ -n "$_fn" ]; do
  _fn="${_fn%%#*}"
  _fn="${_fn//[[:space:]]/}"
  [ -n "$_fn" ] && FUNCTION_NAMES+=("$_fn")
done <"$_functions_list"
unset _fn _functions_list
# Each function's package with the features of a deployed function: its
# secrets reader, and no embedded database (SQLite is for local use;
# production requires PostgreSQL). Packages named with -p resolve features
# over themselves only, not over the tools and tests that turn it on.
DEPLOY_BUILD_ARGS=()
for _fn in "${FUNCTION_NAMES[@]}"; do DEPLOY_BUILD_ARGS+=(-p "$_fn"); done
DEPLOY_BUILD_ARGS+=(--no-default-features --features aws-secrets)
unset _fn
# s.yaml's resource names cannot hold `-`: sso-login is sso_login there.
fc_resource() { echo "${1//-/_}"; }
