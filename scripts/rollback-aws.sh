#!/usr/bin/env bash
# `make rollback-aws`: moves the `live` alias of each Lambda function of the
# stack back to the version before the one it serves now (or to VERSION=N),
# clearing any canary weight. API Gateway invokes `live`, so traffic switches
# at once; nothing is rebuilt.
#
#   make rollback-aws STACK_NAME=tms-chat                       # every function, one back
#   make rollback-aws STACK_NAME=tms-chat FUNCTIONS=SsoLogin VERSION=7
#
# FUNCTIONS lists output prefixes of template.yaml: Health SsoLogin Conversations.
#
# A release still in its canary is stopped instead (aws deploy
# stop-deployment --auto-rollback-enabled): CodeDeploy puts the aliases back
# itself and the stack update rolls back. After a manual alias move, the
# stack's record of the alias is behind reality until the next
# `make deploy-aws`, which publishes and shifts to a new version again.
set -euo pipefail

STACK_NAME="${STACK_NAME:-tms-chat}"
ALIAS=live
read -r -a WHICH <<<"${FUNCTIONS:-Health SsoLogin Conversations}"
AWS_ARGS=()
[ -n "${AWS_REGION:-}" ] && AWS_ARGS+=(--region "$AWS_REGION")
[ -n "${AWS_PROFILE:-}" ] && AWS_ARGS+=(--profile "$AWS_PROFILE")

die() { echo "rollback-aws: $*" >&2; exit 1; }
aws_cmd() { aws "${AWS_ARGS[@]}" "$@"; }

command -v aws >/dev/null 2>&1 || die "the AWS CLI (aws) is missing. Install it with:
    python3 -m pip install awscli      (or AWS CLI v2 from your package manager)
then configure credentials (aws configure, or AWS_PROFILE / AWS_* variables)"

# A release still in its canary: stop it, and CodeDeploy puts every alias back
# on the version it had before (that is the rollback; nothing else to move).
app="$(aws_cmd cloudformation describe-stack-resources --stack-name "$STACK_NAME" \
    --logical-resource-id ServerlessDeploymentApplication \
    --query 'StackResources[0].PhysicalResourceId' --output text)" \
    || die "cannot read stack $STACK_NAME (set STACK_NAME=..., AWS_REGION=...)"
if [ -z "${VERSION:-}" ] && [ -n "$app" ] && [ "$app" != None ]; then
    read -r -a running <<<"$(aws_cmd deploy list-deployments --application-name "$app" \
        --include-only-statuses InProgress Ready Queued --query 'deployments' --output text | tr '\t' ' ')"
    if [ "${#running[@]}" -gt 0 ] && [ "${running[0]}" != None ]; then
        for id in "${running[@]}"; do
            echo "rollback-aws: stopping deployment $id in progress (CodeDeploy restores the alias)"
            aws_cmd deploy stop-deployment --deployment-id "$id" --auto-rollback-enabled >/dev/null
        done
        echo "rollback-aws: done. The stack update fails and CloudFormation rolls it back too."
        exit 0
    fi
fi

status=0
for prefix in "${WHICH[@]}"; do
    fn="$(aws_cmd cloudformation describe-stacks --stack-name "$STACK_NAME" \
        --query "Stacks[0].Outputs[?OutputKey=='${prefix}FunctionName'].OutputValue" --output text)" \
        || die "cannot read the outputs of stack $STACK_NAME (STACK_NAME=..., AWS_REGION=...)"
    if [ -z "$fn" ] || [ "$fn" = None ]; then
        die "stack $STACK_NAME has no output ${prefix}FunctionName"
    fi

    current="$(aws_cmd lambda get-alias --function-name "$fn" --name "$ALIAS" \
        --query FunctionVersion --output text)"
    if [ -n "${VERSION:-}" ]; then
        target="$VERSION"
    else
        target="$(aws_cmd lambda list-versions-by-function --function-name "$fn" \
            --query "Versions[?Version!='\$LATEST'].Version" --output text \
            | tr '\t' '\n' | awk -v c="$current" 'NF && $1 + 0 < c + 0' | sort -n | tail -n 1)"
    fi
    if [ -z "$target" ]; then
        echo "rollback-aws: $fn: no version older than $current to go back to" >&2
        status=1
        continue
    fi

    echo "rollback-aws: $fn: $ALIAS $current -> $target"
    aws_cmd lambda update-alias --function-name "$fn" --name "$ALIAS" \
        --function-version "$target" --routing-config '{"AdditionalVersionWeights":{}}' >/dev/null
done
[ "$status" -eq 0 ] && echo "rollback-aws: done. Check it with make verify against the ApiUrl output."
exit "$status"
