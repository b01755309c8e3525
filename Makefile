# The two commands a newcomer needs: `make run` and `make test`.
# Everything else is for operators (deploy, verify, rollback) and reviewers.

SHELL := /bin/bash
LISTEN_HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fmt lint check

## run: every function on one port (127.0.0.1:8000), embedded defaults, no external service
run:
	@scripts/run-local.sh

## test: the whole suite (unit, HTTP, Lambda path, real Redis and PostgreSQL)
test:
	@scripts/test.sh

fmt:
	cargo fmt --all

## lint: formatting and clippy, warnings denied (CI runs this)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

check: lint test
