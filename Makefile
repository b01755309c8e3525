# The two commands a newcomer needs: `make run` and `make test`.
# Everything else is for operators (deploy, verify, rollback) and reviewers.
# `make` alone lists every target: each has one `## name: what it does` line,
# which `make help` prints.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# make run PORT=8001, make token USER_ID=bob, ... (the other settings of a
# local run are in config/local.env)
USER_ID ?= local-user
SSO_SUB ?= local-user

.PHONY: help run test test-under-load test-no-sdk fmt lint check migrate sign-out-user migrate-large fleet token sso-token watch check-watch verify verify-local bench profile instructions chaos openapi schemathesis fuzz

## help: list every target with what it does (also what bare `make` does)
help:
	@awk 'FNR == 1 && NR > 1 { print "\nDeploy and operate (deploy.mk; guide: docs/deploy.md):" } \
		/^## [A-Za-z0-9_-]+: / { name = substr($$2, 1, length($$2) - 1); sub(/^## [^:]+: /, ""); \
		printf "  make %-16s %s\n", name, $$0 }' $(MAKEFILE_LIST)

## run: every function on http://127.0.0.1:8000 (make run PORT=8001), local settings, no external service
run:
	@scripts/run-local.sh

## test: the whole suite (unit, HTTP, Lambda path, real Redis and PostgreSQL); installs what it needs
test:
	@scripts/test.sh

## test-under-load: the api suite 10 times under plain cargo test (no nextest) while busy loops load every core (LOAD_RUNS=10)
test-under-load:
	@scripts/test-under-load.sh

## test-no-sdk: shared's unit tests without the AWS SDK: as make run builds it (embedded database) and as a deploy build leaves it (none) (CI runs this)
test-no-sdk:
	cargo test -p shared --lib --features embedded-db
	cargo test -p shared --lib

## token: an API token for a local user, created if new (make -s token USER_ID=alice)
token:
	@cargo xtask local-env -- scripts/tool.sh tms-token user "$(USER_ID)"

## sso-token: a GCGC token as the identity provider would issue it, signed with the local SSO_JWT_SECRET
sso-token:
	@cargo xtask local-env -- scripts/tool.sh tms-token sso "$(SSO_SUB)" "$(SSO_SUB)@example.com" "Local User"

## verify-local: the hotfix's checklist against a running `make run` (same PORT), with the local settings
verify-local:
	@cargo xtask verify-local

## verify: the hotfix's checklist against a deployment (BASE_URL=https://..., see README)
verify:
	@cargo xtask verify

## watch: every function under the Lambda emulator on 127.0.0.1:9000 (installs cargo-lambda if missing)
watch:
	@scripts/watch.sh

## check-watch: one request per function through the Lambda emulator (CI runs this)
check-watch:
	@scripts/check-watch.sh

## migrate: apply the migrations to DATABASE_URL (safe in a pipeline, safe when two run at once)
migrate:
	cargo run --release -p tools --features aws-secrets --bin tms-migrate

## sign-out-user: end every session of one user, against DATABASE_URL like migrate (make sign-out-user EXTERNAL_ID=<the user's id at the identity provider>)
sign-out-user:
	@test -n "$(EXTERNAL_ID)" || { echo "usage: make sign-out-user EXTERNAL_ID=<the user's id at the identity provider>" >&2; exit 2; }
	cargo run --release -p tools --features aws-secrets --bin tms-sign-out -- "$(EXTERNAL_ID)"

## migrate-large: the migrations on a table of a million members, timed (the suite runs 100,000; MIGRATION_TEST_MEMBERS=...)
MIGRATION_TEST_MEMBERS ?= 1000000
migrate-large:
	@source scripts/services.sh all && cargo build --workspace --bins --tests && \
		MIGRATION_TEST_MEMBERS=$(MIGRATION_TEST_MEMBERS) cargo test -p tests --test api -- --exact --nocapture \
		conversations::migrations_complete_on_a_large_table_without_the_request_timeout

## fleet: 50 instances of each database function (pool of 1) on one small PostgreSQL, direct then through PgBouncer: cold starts, p50/p99, statuses (FLEET_INSTANCES, FLEET_SECONDS)
fleet:
	@source scripts/services.sh all && cargo build --workspace --bins && "$${CARGO_TARGET_DIR:-target}/debug/tms-fleet"

## bench: every function against its ceiling and floor in one run, one table (prints figures; never a pass/fail)
bench:
	@scripts/bench.sh

## profile: make bench's load on binaries with symbols, perf attached: each function's hottest code
profile:
	@scripts/profile.sh

## instructions: make bench's login load under callgrind: instructions per request of /health and the login, within about 1 % from run to run
instructions:
	@scripts/instructions.sh

## chaos: faults under load, single-use invariants checked (CHAOS_SECONDS_PER_FAULT=2 in CI; 20 for a long run)
CHAOS_SECONDS_PER_FAULT ?= 2
chaos:
	cargo build --workspace --bins
	CHAOS_SECONDS_PER_FAULT=$(CHAOS_SECONDS_PER_FAULT) "$${CARGO_TARGET_DIR:-target}/debug/tms-chaos"

## openapi: regenerate docs/openapi.json from the annotations beside the handlers
openapi:
	cargo run --quiet -p tools --bin tms-openapi > docs/openapi.json.tmp && mv docs/openapi.json.tmp docs/openapi.json

## schemathesis: schemathesis against every route of tms-local from docs/openapi.json (~1 min)
schemathesis:
	@scripts/schemathesis.sh

## fmt: format the Rust code
fmt:
	cargo fmt --all

## lint: formatting and clippy, warnings denied (CI runs this)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p shared --all-targets --features embedded-db -- -D warnings # without the AWS SDK, as the local tools build it
	cargo clippy -p shared --all-targets -- -D warnings # without the SDK and the embedded database
	cargo clippy -p health -p sso-login -p conversations --no-default-features --features aws-secrets --lib --bins -- -D warnings # as deploy builds build them: no embedded database

## fuzz: a fuzzing campaign on nightly, FUZZ_SECONDS (60) per target (FUZZ_TARGETS="cursor host"; docs/fuzzing.md)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)

## check: lint, then test
check: lint test

include deploy.mk
