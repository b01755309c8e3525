# Deploy, roll back and check the infrastructure templates (included by the
# Makefile; `make help` lists these targets too). Operator guide: docs/deploy.md.

# Included anywhere in the Makefile, these targets never become its default goal.
_deploy_mk_default_goal := $(.DEFAULT_GOAL)

STACK_NAME ?= tms-chat
SAM_CONFIG ?= samconfig.toml
export STACK_NAME

.PHONY: build-lambda build-fc deploy-aws deploy-fc rollback-aws rollback-fc check-templates

## build-lambda: release arm64 zips for AWS Lambda -> dist/lambda/<name>/ (needs cargo-lambda, zig)
build-lambda:
	@scripts/build-functions.sh lambda

## build-fc: static x86_64 (musl) builds for Alibaba FC -> dist/fc/<name>/ (cargo-lambda + zig, or musl-tools)
build-fc:
	@scripts/build-functions.sh fc

## deploy-aws: sam build + sam deploy of template.yaml (guided on the first run, then samconfig.toml)
deploy-aws:
	@command -v sam >/dev/null 2>&1 || { echo "deploy-aws: the AWS SAM CLI (sam) is missing. Install it with: python3 -m pip install aws-sam-cli" >&2; exit 1; }
	@cargo lambda --version >/dev/null 2>&1 || { echo "deploy-aws: sam build needs cargo-lambda. Install it with: python3 -m pip install cargo-lambda ziglang" >&2; exit 1; }
	@# The functions verify RDS with its public CA bundle, shipped in CaBundleLayer (ca/).
	@[ -f ca/rds-global-bundle.pem ] || scripts/fetch-ca-bundles.sh
	SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 sam build --template-file template.yaml
	@if [ -f "$(SAM_CONFIG)" ]; then \
		echo "sam deploy (settings from $(SAM_CONFIG))"; \
		sam deploy --config-file "$(SAM_CONFIG)"; \
	else \
		echo "No $(SAM_CONFIG) yet: guided first deploy (it saves your answers to $(SAM_CONFIG))."; \
		echo "First deploy: no canary yet, see docs/deploy.md."; \
		sam deploy --guided --stack-name "$(STACK_NAME)" --capabilities CAPABILITY_IAM --config-file "$(SAM_CONFIG)"; \
	fi
	@aws cloudformation describe-stacks --stack-name "$(STACK_NAME)" \
		--query "Stacks[0].Outputs[?OutputKey=='ApiUrl'].OutputValue" --output text 2>/dev/null \
		| sed 's/^/ApiUrl: /' || true

## deploy-fc: deploy s.yaml to Alibaba FC and move the `live` aliases (needs s: npm install -g @serverless-devs/s)
deploy-fc:
	@scripts/deploy-fc.sh

## rollback-aws: each function's `live` alias to its previous version, or stop a canary (STACK_NAME=, VERSION=N)
rollback-aws:
	@scripts/rollback-aws.sh

## rollback-fc: each FC function's `live` alias to its previous version (FUNCTIONS=, VERSION=N)
rollback-fc:
	@scripts/rollback-fc.sh

## check-templates: offline checks of template.yaml and s.yaml (pytest: cfn-lint, SAM translator, ...)
check-templates:
	@scripts/check-templates.sh

.DEFAULT_GOAL := $(_deploy_mk_default_goal)
