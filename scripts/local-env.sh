#!/usr/bin/env bash
# Sourced by `make run`, `make token`, `make sso-token` and `make verify-local`:
# exports the development settings of config/local.env, except those already
# set (non-empty) in the environment, and makes the .data/ directory that the
# local SQLite file lives in. config/local.env is the one place they are written.
_local_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while IFS= read -r _line || [ -n "$_line" ]; do
  case "$_line" in '' | '#'*) continue ;; esac
  _key="${_line%%=*}"
  if [[ ! "$_key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "config/local.env: not a KEY=value line: $_line" >&2
    continue
  fi
  if [ -z "${!_key:-}" ]; then export "$_key=${_line#*=}"; fi
done <"$_local_env_root/config/local.env"
mkdir -p "$_local_env_root/.data"
unset _line _key _local_env_root
