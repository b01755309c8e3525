#!/usr/bin/env bash
# Sourced by the scripts: FUNCTION_NAMES, the deploy units of functions/LIST, in
# its order; fc_resource NAME gives a function's s.yaml resource name.
_functions_list="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/functions/LIST"
FUNCTION_NAMES=()
while IFS= read -r _fn || [ -n "$_fn" ]; do
  _fn="${_fn%%#*}"
  _fn="${_fn//[[:space:]]/}"
  [ -n "$_fn" ] && FUNCTION_NAMES+=("$_fn")
done <"$_functions_list"
unset _fn _functions_list
# s.yaml's resource names cannot hold `-`: sso-login is sso_login there.
fc_resource() { echo "${1//-/_}"; }
