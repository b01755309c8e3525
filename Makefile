# The two commands a newcomer needs: `make run` and `make test`.
# Everything else is for operators (deploy, verify, rollback) and reviewers.

SHELL := /bin/bash
LISTEN_HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fmt lint check migrate token sso-token watch verify check-watch bench

## run: every function on one port (127.0.0.1:8000), embedded defaults, no external service
run:
	@scripts/run-local.sh

## test: the whole suite (unit, HTTP, Lambda path, real Redis and PostgreSQL)
test:
	@scripts/test.sh

## migrate: apply the migrations to DATABASE_URL (safe in a pipeline, safe when two run at once)
migrate:
	cargo run --quiet --release -p tools --bin tms-migrate

## token: create (or update) a local user and print an API token for it (USER_ID=alice)
USER_ID ?= local-user
token:
	@source scripts/local-env.sh && cargo run --quiet -p tools --bin tms-token -- user "$(USER_ID)"

## watch: every function under `cargo lambda watch` (the Lambda emulator, on :9000), with the
## local settings from [workspace.metadata.lambda.env] in Cargo.toml; e.g.
## curl localhost:9000/lambda-url/health/health (needs cargo-lambda: pip install cargo-lambda)
watch:
	@mkdir -p .data
	cargo lambda watch --disable-cors

## check-watch: a request through `cargo lambda watch` per function (CI runs this)
check-watch:
	@scripts/check-watch.sh

## verify: the seed's checklist against a deployment: make verify BASE_URL=https://...
## (or HEALTH_URL, SSO_URL, CONV_URL; SSO_JWT_SECRET on staging or SSO_TEST_TOKEN)
verify:
	@cargo run --quiet -p tools --bin tms-verify

## bench: binary sizes, start-up time, latencies (prints its figures; never a pass/fail)
bench:
	@scripts/bench.sh

## sso-token: a GCGC token as the identity provider would issue it, signed with the local SSO_JWT_SECRET
SSO_SUB ?= local-user
sso-token:
	@source scripts/local-env.sh && cargo run --quiet -p tools --bin tms-token -- sso "$(SSO_SUB)" "$(SSO_SUB)@example.com" "Local User"

fmt:
	cargo fmt --all

## lint: formatting and clippy, warnings denied (CI runs this)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

check: lint test

include deploy.mk

## fuzz: a fuzzing campaign, FUZZ_SECONDS (60) per target, on nightly with cargo-fuzz;
## a crash fails it (make fuzz FUZZ_TARGETS="cursor host" for some); see docs/fuzzing.md
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
.PHONY: fuzz
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)
