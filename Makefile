# Streaming connector to the Bronze layer: local stack, build, run and test.
# Every setting below can be overridden from the environment (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
MOTO_PORT ?= 5055
LAMBDA_PORT ?= 9000
export MOTO_PORT LAMBDA_PORT
export AWS_ENDPOINT_URL ?= http://127.0.0.1:$(MOTO_PORT)
export AWS_REGION ?= us-east-1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export BRONZE_BUCKET ?= bronze-local
export STATE_TABLE ?= bronze-state-local
export DLQ_NAME ?= bronze-dlq-local
export BRONZE_PREFIX ?= bronze
export CONNECTOR_CONFIG ?= $(CURDIR)/config/connector.yaml
# Outside the checkout, so a fresh clone (CI) reuses earlier builds.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bronze-connector/target
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv build stack-up stack-down run invoke-local test lint bench validate-template package bench-runner bench-runner-kinesis clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Install moto and cargo-lambda into .venv

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

build: ## Build both Lambda functions as `cargo lambda watch` runs them
	cargo build --bin kinesis-consumer
	cargo build --bin kafka-consumer

stack-up: venv ## Start moto on 127.0.0.1:$MOTO_PORT and create the bucket, table and queue
	$(VENV)/bin/python scripts/stack.py up

stack-down: ## Stop moto
	$(VENV)/bin/python scripts/stack.py down

run: venv build ## Main job: fresh local stack, both functions with every sample event, then the runner on a Kafka topic and a Kinesis stream
	scripts/run-local.sh

invoke-local: run ## Alias of run

test: venv ## Every test: format, clippy, unit, property and integration tests on a fresh local stack
	scripts/test.sh

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

validate-template: venv ## Validate template.yaml offline: cfn-lint (serverless rules) and SAM translation tests
	scripts/validate-template.sh

package: venv ## Build the arm64 Lambda zips of the three functions (cargo-lambda + Zig) and check they are aarch64 executables
	scripts/package.sh

bench: ## Landing benchmark and KPL deaggregation per user record (see BENCHMARKS.md)
	cargo bench -p bronze-shared --bench landing
	cargo bench -p bronze-shared --bench kpl

bench-runner: stack-up ## Runner vs consume-only on a 1M-message Kafka backlog (tansu + moto; BENCH_* settings in BENCHMARKS.md)
	scripts/brokers.sh
	cargo bench -p streaming-connector --bench kafka_backlog

# The Kinesis bench serves the stream from a moto of its own on KINESIS_MOTO_PORT (S3 and
# DynamoDB stay on MOTO_PORT), as on AWS where the stream is not served by the process that
# serves S3 and DynamoDB; BENCH_KINESIS_ENDPOINT= (empty) makes the bench use one moto (the
# second is still started and stopped). Not 5056: that is the test suite's moto.
KINESIS_MOTO_PORT ?= 5057

bench-runner-kinesis: stack-up ## Runner vs a GetRecords-only loop on a Kinesis backlog in moto (BENCH_* settings in BENCHMARKS.md)
	MOTO_PORT=$(KINESIS_MOTO_PORT) AWS_ENDPOINT_URL=http://127.0.0.1:$(KINESIS_MOTO_PORT) $(VENV)/bin/python scripts/stack.py up
	BENCH_KINESIS_ENDPOINT=$${BENCH_KINESIS_ENDPOINT-http://127.0.0.1:$(KINESIS_MOTO_PORT)} cargo bench -p streaming-connector --bench kinesis_backlog; \
	  rc=$$?; MOTO_PORT=$(KINESIS_MOTO_PORT) $(VENV)/bin/python scripts/stack.py down; exit $$rc

clean: stack-down
	rm -rf .stack
