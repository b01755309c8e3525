# The two commands a newcomer needs: `make run` and `make test`.
# Everything else is for operators (deploy, verify, rollback) and reviewers.

SHELL := /bin/bash
LISTEN_HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fmt lint check migrate token

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

fmt:
	cargo fmt --all

## lint: formatting and clippy, warnings denied (CI runs this)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

check: lint test
