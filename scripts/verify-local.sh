#!/usr/bin/env bash
# `make verify-local`: `make verify` (the hotfix's checklist) against the
# server that `make run` started, at the same LISTEN_HOST and PORT, with the
# local settings of config/local.env (SSO_JWT_SECRET mints the GCGC token).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/local-env.sh
source scripts/local-env.sh
if ! (exec 3<>"/dev/tcp/$LISTEN_HOST/$PORT") 2>/dev/null; then
  echo "make verify-local: nothing answers on $LISTEN_HOST:$PORT: start make run first (in another terminal), with the same PORT" >&2
  exit 1
fi
BASE_URL="http://$LISTEN_HOST:$PORT" exec scripts/tool.sh tms-verify
