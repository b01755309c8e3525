# Deploy, roll back and check the infrastructure templates (included by the
# Makefile; `make help` lists these targets too). Operator guide: docs/deploy.md.

# Included anywhere in the Makefile, these targets never become its default goal.
_deploy_mk_default_goal := $(.DEFAULT_GOAL)

STACK_NAME ?= tms-chat
SAM_CONFIG ?= samconfig.toml
export STACK_NAME SAM_CONFIG

.PHONY: build-lambda build-fc deploy-aws deploy-fc rollback-aws rollback-fc check-templates check-sam-build

## build-lambda: release arm64 zips for AWS Lambda -> dist/lambda/<name>/ (needs cargo-lambda, zig)
build-lambda:
	@cargo xtask build-lambda

# ---- sam build: one target per function resource of template.yaml ----------
# Its functions say `BuildMethod: makefile` with ContextPath and
# WorkingDirectory `.`: `sam build` runs `make build-<LogicalId>` at the
# workspace root with ARTIFACTS_DIR set (SsoLoginFunction -> sso-login). Each
# target is that function's deploy build alone: -p <name> with the features of
# a deployed function (`cargo xtask deploy-features`: no embedded database,
# the Secrets Manager reader), arm64 by cargo-lambda as `make build-lambda`;
# its bootstrap goes to ARTIFACTS_DIR. (SAM's rust-cargolambda method passes
# BuildProperties.Binary only, `--bin <name>`: default features, SQLite linked.)
_deploy_mk_dir := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
_xtask = $(shell cd '$(_deploy_mk_dir)' && cargo xtask $(1))
# The deploy units of functions/LIST, the deploy features and cargo's output
# folder, from xtask (evaluated when used).
_function_names = $(call _xtask,functions)
DEPLOY_FEATURE_ARGS = $(call _xtask,deploy-features)
_cargo_target_dir = $(or $(call _xtask,target-dir),$(_deploy_mk_dir)/target)
_sam_function = $(shell printf '%s' '$(1)' | sed -E 's/([a-z0-9])([A-Z])/\1-\2/g' | tr '[:upper:]' '[:lower:]')

build-%Function:
	$(if $(ARTIFACTS_DIR),,$(error $@: `sam build` runs this target, with ARTIFACTS_DIR set))
	$(if $(filter $(call _sam_function,$*),$(_function_names)),,$(error $@: functions/LIST has no $(call _sam_function,$*)))
	@cargo lambda --version >/dev/null 2>&1 || { echo "$@: needs cargo-lambda. Install it with: python3 -m pip install cargo-lambda ziglang" >&2; exit 1; }
	@if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then \
		rustup target add aarch64-unknown-linux-gnu; fi
	cd '$(_deploy_mk_dir)' && cargo lambda build --release --arm64 -p $(call _sam_function,$*) $(strip $(DEPLOY_FEATURE_ARGS))
	cp '$(_cargo_target_dir)/lambda/$(call _sam_function,$*)/bootstrap' '$(ARTIFACTS_DIR)/bootstrap'

## build-fc: static x86_64 (musl) builds for Alibaba FC -> dist/fc/<name>/ (cargo-lambda + zig, or musl-tools)
build-fc:
	@cargo xtask build-fc

## deploy-aws: sam build + sam deploy of template.yaml (guided on the first run, then samconfig.toml)
deploy-aws:
	@cargo xtask deploy-aws

## deploy-fc: deploy s.yaml to Alibaba FC and move the `live` aliases (needs s: npm install -g @serverless-devs/s)
deploy-fc:
	@cargo xtask deploy-fc

## rollback-aws: each function's `live` alias to its previous version, or stop a canary (STACK_NAME=, FUNCTIONS=, VERSION=N)
rollback-aws:
	@cargo xtask rollback-aws

## rollback-fc: each FC function's `live` alias to its previous version (FUNCTIONS=, VERSION=N)
rollback-fc:
	@cargo xtask rollback-fc

## check-templates: offline checks of template.yaml and s.yaml (pytest: cfn-lint, SAM translator, ...)
check-templates:
	@scripts/check-templates.sh

## check-sam-build: sam build of template.yaml (three arm64 release builds), then no bootstrap may link SQLite
check-sam-build:
	@TMS_CHECK_SAM_BUILD=1 scripts/check-templates.sh -k sam_build -s

.DEFAULT_GOAL := $(_deploy_mk_default_goal)
