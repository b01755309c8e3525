#!/usr/bin/env bash
# `make deploy-fc`: deploys s.yaml to Alibaba Cloud Function Compute and
# releases it through versions and the `live` alias:
#
#   1. s <fn> deploy            LATEST gets the new code and configuration
#   2. s <fn> version publish   an immutable version N of it
#   3. optional canary          live = previous version + N at FC_CANARY_WEIGHT,
#                               for FC_CANARY_SECONDS, then FC_CANARY_CHECK must pass
#   4. s <fn> alias publish     live -> N
#   5. s domain deploy          the custom domain's routes invoke `live`
#
# A failed canary check puts `live` back on the previous versions and fails.
# Settings come from the environment (see the header of s.yaml and
# docs/deploy.md); -a/--access etc. can be passed through S_ARGS.
#
#   FC_CANARY_WEIGHT=0.1 FC_CANARY_SECONDS=300 \
#   FC_CANARY_CHECK='curl -fsS https://api.example.com/health/ready' make deploy-fc
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/functions.sh
source scripts/functions.sh
DIST=("${FUNCTION_NAMES[@]}")
RESOURCES=()
for f in "${DIST[@]}"; do RESOURCES+=("$(fc_resource "$f")"); done
ALIAS=live
read -r -a S_EXTRA <<<"${S_ARGS:-}"

die() { echo "deploy-fc: $*" >&2; exit 1; }
s_cmd() { s "$@" "${S_EXTRA[@]}"; }

# The custom domain serves HTTPS only (s.yaml): no certificate, no deploy.
[ -n "${TMS_FC_CERT_ID:-}" ] || die "TMS_FC_CERT_ID is not set: the custom domain serves HTTPS only; upload the certificate of TMS_FC_DOMAIN to Certificate Management Service and set TMS_FC_CERT_ID to its id (docs/deploy.md)"

command -v s >/dev/null 2>&1 || die "the Serverless Devs CLI (s) is missing. Install it with:
    npm install -g @serverless-devs/s
then add credentials: s config add (or set them in the environment; see docs/deploy.md)"

for d in "${DIST[@]}"; do
    [ -x "dist/fc/$d/bootstrap" ] || die "dist/fc/$d/bootstrap is missing: run make build-fc first"
done

missing=()
for v in ALLOWED_ORIGINS ALLOWED_HOSTS JWT_SECRET DATABASE_URL REDIS_URL \
         TMS_FC_VPC_ID TMS_FC_VSWITCH_ID TMS_FC_SECURITY_GROUP_ID TMS_FC_DOMAIN; do
    [ -n "${!v:-}" ] || missing+=("$v")
done
if [ -z "${SSO_JWT_SECRET:-}" ] && [ -z "${SSO_JWKS_URL:-}" ]; then
    missing+=("SSO_JWT_SECRET or SSO_JWKS_URL")
fi
[ ${#missing[@]} -eq 0 ] || die "set these in the environment first: ${missing[*]}"

# Highest `versionId: N` in the output of an s command (default or JSON output).
version_ids() { grep -Eo "versionId\"?'?:[[:space:]]*\"?'?[0-9]+" | grep -Eo '[0-9]+$' || true; }
max_version() { version_ids | sort -n | tail -n 1; }
live_version() { { s_cmd "$1" alias get --alias-name "$ALIAS" 2>/dev/null || true; } | max_version; }

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
declare -A previous new

for r in "${RESOURCES[@]}"; do
    echo "== $r: deploy (LATEST)"
    s_cmd "$r" deploy -y
    previous[$r]="$(live_version "$r")"
    echo "== $r: publish a version of $revision"
    s_cmd "$r" version publish --description "git $revision"
    new[$r]="$(s_cmd "$r" version list | max_version)"
    [ -n "${new[$r]}" ] || die "$r: could not read the published version id"
    echo "   $r: live was ${previous[$r]:-none}, new version ${new[$r]}"
done

rollback_all() {
    local r
    for r in "${RESOURCES[@]}"; do
        if [ -n "${previous[$r]}" ]; then
            s_cmd "$r" alias publish --alias-name "$ALIAS" --version-id "${previous[$r]}" \
                --additionalVersionWeight '{}' || echo "deploy-fc: could not restore $r:$ALIAS" >&2
        fi
    done
}

if [ -n "${FC_CANARY_WEIGHT:-}" ]; then
    for r in "${RESOURCES[@]}"; do
        [ -n "${previous[$r]}" ] || continue # first deploy: nothing to shift from
        echo "== $r: canary, $FC_CANARY_WEIGHT of the traffic of $ALIAS on version ${new[$r]}"
        s_cmd "$r" alias publish --alias-name "$ALIAS" --version-id "${previous[$r]}" \
            --additionalVersionWeight "{\"${new[$r]}\":$FC_CANARY_WEIGHT}"
    done
    echo "== canary: waiting ${FC_CANARY_SECONDS:-300}s"
    sleep "${FC_CANARY_SECONDS:-300}"
    if [ -n "${FC_CANARY_CHECK:-}" ] && ! bash -c "$FC_CANARY_CHECK"; then
        echo "deploy-fc: the canary check failed: $ALIAS goes back to the previous versions" >&2
        rollback_all
        exit 1
    fi
fi

for r in "${RESOURCES[@]}"; do
    echo "== $r: $ALIAS -> version ${new[$r]}"
    s_cmd "$r" alias publish --alias-name "$ALIAS" --version-id "${new[$r]}" --additionalVersionWeight '{}'
done

echo "== domain: routes to the $ALIAS aliases"
s_cmd domain deploy -y

echo "deploy-fc: done. Check it: make verify against the custom domain (docs/deploy.md)."
