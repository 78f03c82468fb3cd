#!/usr/bin/env bash
# Every test, on a fresh moto of its own (port $TEST_MOTO_PORT, default 5056) that is stopped
# on exit. Integration tests create uniquely named buckets, tables and queues.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python

echo "== tools: protoc, tansu (Kafka protocol), pulsar-lite (Pulsar protocol)"
scripts/brokers.sh

echo "== format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== template.yaml, offline"
scripts/validate-template.sh

echo "== build the functions as cargo lambda watch runs them"
cargo build --bin kinesis-consumer
cargo build --bin kafka-consumer

echo "== local stack"
export MOTO_PORT="${TEST_MOTO_PORT:-5056}"
export AWS_ENDPOINT_URL="http://127.0.0.1:${MOTO_PORT}"
export STACK_DIR=.stack/test
"$py" scripts/stack.py down >/dev/null
trap '"$py" scripts/stack.py down >/dev/null' EXIT
"$py" scripts/stack.py up

echo "== unit, property and integration tests"
cargo test --workspace --all-targets --no-fail-fast
