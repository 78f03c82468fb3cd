#!/usr/bin/env bash
# The main job on the local stack: start a fresh moto, serve both functions with
# `cargo lambda watch`, invoke them with every sample event in events/, then print the landed
# objects, the checkpoints and commit log, and the dead letters. Then the runner: one
# `streaming-connector run` lands a Kafka topic (local tansu broker) and a Kinesis stream with
# KPL aggregates (moto), and `status` and `verify` cover both. Last, everything committed
# (functions and runner) is published to the Iceberg table and queried. The stack stays up for
# inspection; `make stack-down` stops it. Files go to $STACK_DIR (.stack).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
stack_dir="${STACK_DIR:-.stack}"

"$py" scripts/stack.py down >/dev/null
"$py" scripts/stack.py up
queue_url="${AWS_ENDPOINT_URL}/123456789012/${DLQ_NAME}"

mkdir -p "$stack_dir"
log="$stack_dir/watch.log"
setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$LAMBDA_PORT" \
  --env-var "BRONZE_BUCKET=${BRONZE_BUCKET},STATE_TABLE=${STATE_TABLE},DLQ_URL=${queue_url},BRONZE_PREFIX=${BRONZE_PREFIX},CONNECTOR_CONFIG=${CONNECTOR_CONFIG}" \
  >"$log" 2>&1 &
watch_pid=$!
trap 'kill -TERM -- "-$watch_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$LAMBDA_PORT") 2>/dev/null && break
  kill -0 "$watch_pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done

invoke() {
  local fn=$1 file=$2
  printf '\n>> cargo lambda invoke %s --data-file %s\n' "$fn" "$file"
  cargo lambda invoke -A 127.0.0.1 -P "$LAMBDA_PORT" --data-file "$file" "$fn" || true
  echo
}
# In stream order: each *-poison.json continues where its sample event ends.
invoke kinesis-consumer events/kinesis.json
invoke kinesis-consumer events/kinesis-poison.json
for f in msk self-managed-kafka; do
  invoke kafka-consumer "events/$f.json"
  invoke kafka-consumer "events/$f-poison.json"
done
echo
echo ">> replaying events/kinesis.json and events/msk.json: nothing new may land"
invoke kinesis-consumer events/kinesis.json
invoke kafka-consumer events/msk.json
echo
"$py" scripts/stack.py inspect

# The same engine as a long-running runner: a Kafka consumer group on a local tansu broker
# and a Kinesis stream on moto (shard leases in the state table, KPL aggregates), landed by
# one `streaming-connector run`.
echo
echo "== runner: Kafka topic runner-orders on tansu and Kinesis stream runner-clicks on moto, landed by streaming-connector run"
scripts/brokers.sh >/dev/null
tansu_bin="${TOOLS_DIR:-$HOME/.cache/bronze-connector/tools}/bin/tansu"
kafka_port="${KAFKA_PORT:-9092}"
setsid "$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
  >"$stack_dir/tansu.log" 2>&1 &
tansu_pid=$!
trap 'kill -TERM -- "-$watch_pid" 2>/dev/null || true; kill "$tansu_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break; sleep 0.1; done
"$py" scripts/produce_kafka.py "127.0.0.1:$kafka_port" runner-orders 3 300
"$py" scripts/stack.py kinesis-produce runner-clicks
sed -e "s/@KAFKA@/127.0.0.1:$kafka_port/" config/runner-local.yaml >"$stack_dir/runner.yaml"
cargo build -q --bin streaming-connector
runner="$CARGO_TARGET_DIR/debug/streaming-connector"
export DLQ_URL="$queue_url"
"$runner" run --config "$stack_dir/runner.yaml" >"$stack_dir/runner.log" 2>&1 &
runner_pid=$!
# Until the Kafka partitions show no lag and every Kinesis shard's checkpoint is its last
# user record (Kinesis lag is time, MillisBehindLatest, so it is checked against the shards).
landed=false
for _ in $(seq 1 300); do
  if "$runner" status --config "$stack_dir/runner.yaml" 2>/dev/null | awk '$1=="kafka" && $2=="runner-orders" {lag+=$6; n++} END {exit !(n==3 && lag==0)}' &&
    "$py" scripts/stack.py kinesis-landed runner-clicks 2>/dev/null; then
    landed=true
    break
  fi
  kill -0 "$runner_pid" 2>/dev/null || { cat "$stack_dir/runner.log"; exit 1; }
  sleep 0.2
done
if ! $landed; then
  echo "the runner did not land everything:"
  "$runner" status --config "$stack_dir/runner.yaml" || true
  "$py" scripts/stack.py kinesis-landed runner-clicks || true
  kill -TERM "$runner_pid" 2>/dev/null || true
  echo "runner log: $stack_dir/runner.log"
  exit 1
fi
kill -TERM "$runner_pid"
if wait "$runner_pid"; then
  echo "runner drained, released its shard leases and exited 0 on SIGTERM"
else
  echo "runner exited $? on SIGTERM; its log: $stack_dir/runner.log"
  exit 1
fi
echo
echo ">> streaming-connector status"
"$runner" status --config "$stack_dir/runner.yaml"
echo ">> streaming-connector verify"
"$runner" verify --config "$stack_dir/runner.yaml"
echo
"$py" scripts/stack.py inspect

# Bronze as an Iceberg table: every committed object above (functions and runner) published
# once to a SQL catalog on SQLite, with the warehouse in the Bronze bucket on moto; verify
# checks the table against the commit log; then a query over it.
catalog_db="$(cd "$stack_dir" && pwd)/catalog.db"
warehouse="s3://${BRONZE_BUCKET}/iceberg"
rm -f "$catalog_db"
echo
echo "== publish: Bronze as an Iceberg table (catalog sqlite:$catalog_db, warehouse $warehouse)"
"$runner" publish --catalog "sqlite:$catalog_db" --warehouse "$warehouse"
echo ">> publishing again: nothing new"
"$runner" publish --catalog "sqlite:$catalog_db" --warehouse "$warehouse"
echo ">> streaming-connector verify, with the table"
"$runner" verify --config "$stack_dir/runner.yaml" --catalog "sqlite:$catalog_db" --warehouse "$warehouse"
echo ">> a query over the table (pyiceberg reads the catalog, DuckDB runs the SQL)"
"$py" scripts/query_iceberg.py "$catalog_db" "$warehouse"
echo
echo "Function logs: $log; runner log: $stack_dir/runner.log. The stack is still up on ${AWS_ENDPOINT_URL}; stop it with 'make stack-down'."
