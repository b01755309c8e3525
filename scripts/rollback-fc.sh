#!/usr/bin/env bash
# `make rollback-fc`: moves the `live` alias of each FC function back to the
# version before the one it serves now (or to VERSION=N for every function
# named in FUNCTIONS), clearing any canary weight. The custom domain invokes
# `live`, so traffic switches at once; nothing is rebuilt or redeployed.
#
#   make rollback-fc                                  # every function, one version back
#   make rollback-fc FUNCTIONS=sso_login VERSION=12   # one function, to version 12
#
# Resource names are those of s.yaml: the names of functions/LIST with `_`
# for `-` (health, sso_login, conversations).
set -euo pipefail
cd "$(dirname "$0")/.."

ALIAS=live
if [ -n "${FUNCTIONS:-}" ]; then
    read -r -a RESOURCES <<<"$FUNCTIONS"
else
    # shellcheck source=scripts/functions.sh
    source scripts/functions.sh
    RESOURCES=()
    for f in "${FUNCTION_NAMES[@]}"; do RESOURCES+=("$(fc_resource "$f")"); done
fi
read -r -a S_EXTRA <<<"${S_ARGS:-}"

die() { echo "rollback-fc: $*" >&2; exit 1; }
s_cmd() { s "$@" "${S_EXTRA[@]}"; }

command -v s >/dev/null 2>&1 || die "the Serverless Devs CLI (s) is missing. Install it with:
    npm install -g @serverless-devs/s
then add credentials: s config add"

version_ids() { grep -Eo "versionId\"?'?:[[:space:]]*\"?'?[0-9]+" | grep -Eo '[0-9]+$' || true; }

status=0
for r in "${RESOURCES[@]}"; do
    current="$({ s_cmd "$r" alias get --alias-name "$ALIAS" || true; } | version_ids | sort -n | tail -n 1)"
    [ -n "$current" ] || { echo "rollback-fc: $r has no $ALIAS alias" >&2; status=1; continue; }
    if [ -n "${VERSION:-}" ]; then
        target="$VERSION"
    else
        target="$({ s_cmd "$r" version list || true; } | version_ids | sort -n | uniq | awk -v c="$current" '$1 < c' | tail -n 1)"
    fi
    if [ -z "$target" ]; then
        echo "rollback-fc: $r: no version older than $current to go back to" >&2
        status=1
        continue
    fi
    echo "rollback-fc: $r: $ALIAS $current -> $target"
    s_cmd "$r" alias publish --alias-name "$ALIAS" --version-id "$target" --additionalVersionWeight '{}'
done
[ "$status" -eq 0 ] && echo "rollback-fc: done. The next make deploy-fc publishes a new version again."
exit "$status"
