#!/usr/bin/env python3
"""Local AWS stack for the connector: moto in server mode on 127.0.0.1.

  stack.py up        start moto (if not running) and create the bucket, table and queue
  stack.py down      stop moto
  stack.py create    create the bucket, table and queue on a running moto
  stack.py inspect   print landed objects, checkpoints, the commit log, shard leases and
                     DLQ entries
  stack.py kinesis-produce STREAM
                     create a 2-shard Kinesis stream and put plain records and KPL
                     aggregates built by AWS's aggregator (PyPI aws-kinesis-agg)
  stack.py kinesis-landed STREAM
                     exit 0 when every shard's checkpoint is its last user record

Settings come from the environment (defaults in brackets):
  MOTO_PORT [5055], BRONZE_BUCKET [bronze-local], STATE_TABLE [bronze-state-local],
  DLQ_NAME [bronze-dlq-local], BRONZE_PREFIX [bronze], STACK_DIR [.stack]
"""
import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

PORT = int(os.environ.get("MOTO_PORT", "5055"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
BUCKET = os.environ.get("BRONZE_BUCKET", "bronze-local")
TABLE = os.environ.get("STATE_TABLE", "bronze-state-local")
QUEUE = os.environ.get("DLQ_NAME", "bronze-dlq-local")
PREFIX = os.environ.get("BRONZE_PREFIX", "bronze")
STACK_DIR = os.environ.get("STACK_DIR", ".stack")
PIDFILE = os.path.join(STACK_DIR, f"moto-{PORT}.pid")

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])


def client(name):
    import boto3
    from botocore.config import Config

    return boto3.client(name, endpoint_url=ENDPOINT, config=Config(s3={"addressing_style": "path"}))


def ready():
    try:
        urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=1)
        return True
    except Exception:
        return False


def up():
    os.makedirs(STACK_DIR, exist_ok=True)
    if not ready():
        log = open(os.path.join(STACK_DIR, f"moto-{PORT}.log"), "w")
        # moto's server with DynamoDB transactions isolated (scripts/moto_server.py says why).
        moto = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_server.py")
        proc = subprocess.Popen(
            [sys.executable, moto, "-H", "127.0.0.1", "-p", str(PORT)], stdout=log, stderr=log, start_new_session=True
        )
        with open(PIDFILE, "w") as f:
            f.write(str(proc.pid))
        for _ in range(150):
            if ready():
                break
            if proc.poll() is not None:
                sys.exit(f"moto exited with {proc.returncode}; see {log.name}")
            time.sleep(0.2)
        else:
            sys.exit(f"moto did not answer on {ENDPOINT} within 30 s")
    print(f"moto listening on {ENDPOINT}")
    create()


def down():
    if os.path.exists(PIDFILE):
        pid = int(open(PIDFILE).read())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        os.remove(PIDFILE)
        print(f"moto on port {PORT} stopped")


def create():
    s3, ddb, sqs = client("s3"), client("dynamodb"), client("sqs")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    try:
        ddb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ddb.exceptions.ResourceInUseException:
        pass
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    print(f"bucket={BUCKET} table={TABLE} dlq={url}")


def queue_url():
    return client("sqs").get_queue_url(QueueName=QUEUE)["QueueUrl"]


def decompress(key, body):
    """A Bronze object's bytes: gzip or zstd by the key's suffix, every member or frame."""
    if not key.endswith(".zst"):
        return gzip.decompress(body)
    import zstandard

    out = []
    while body:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out.append(frame.decompress(body))
        body = frame.unused_data
    return b"".join(out)


def cursor_text(pk, sortable):
    """A sortable cursor as the connector displays it: unpadded, and a KPL user record's
    (128-digit sequence number + 10-digit sub-sequence number) as `<sequence>:<sub>`."""
    if pk.startswith("kinesis#") and len(sortable) == 138:
        return f"{sortable[:128].lstrip('0') or '0'}:{int(sortable[128:])}"
    return sortable.lstrip("0") or "0"


def inspect():
    s3, ddb, sqs = client("s3"), client("dynamodb"), client("sqs")
    print(f"== Landed objects in s3://{BUCKET}/{PREFIX}/")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith((".jsonl.gz", ".jsonl.zst")):
                lines = decompress(obj["Key"], body).decode().splitlines()
                print(f"{obj['Key']}  ({len(lines)} records, {obj['Size']} bytes)")
                for line in lines[:2]:
                    print("    " + line[:220])
            else:
                print(f"{obj['Key']}  ({obj['Size']} bytes)")
    print(f"\n== Checkpoints and commit log in {TABLE}")
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName=TABLE):
        items.extend(page["Items"])
    leases = [i for i in items if i["pk"]["S"].startswith("lease#")]
    items = [i for i in items if not i["pk"]["S"].startswith("lease#")]
    items.sort(key=lambda i: (i["pk"]["S"], i["sk"]["S"] != "checkpoint", i["sk"]["S"]))
    for item in items:
        pk = item["pk"]["S"]
        if item["sk"]["S"] == "positions":
            # The partition's commit-log positions (the Iceberg publisher's watermarks).
            print(f"positions  {pk:<40} last={item.get('last_position', {}).get('N', '-')} "
                  f"reset_floor={item.get('reset_floor', {}).get('N', '0')}")
            continue
        if item["sk"]["S"] == "start":
            # A `start_from: latest` start position, recorded before the first commit.
            print(f"start      {pk:<40} {item.get('start', {}).get('S', '-')}")
            continue
        kind = "checkpoint" if item["sk"]["S"] == "checkpoint" else "commit    "
        position = item.get("position", {}).get("N")
        print(f"{kind} {pk:<40} first={cursor_text(pk, item['first']['S'])} "
              f"last={cursor_text(pk, item['last']['S'])} records={item['records']['N']} "
              f"dead_lettered={item['dead_lettered']['N']} object={item.get('object_key', {}).get('S', '-').rsplit('/', 1)[-1]}"
              + (f" position={position}" if position else ""))
    if leases:
        print(f"\n== Kinesis shard leases in {TABLE}")
        for item in sorted(leases, key=lambda i: (i["pk"]["S"], i["sk"]["S"])):
            print(f"lease      {item['pk']['S'].removeprefix('lease#'):<28} {item['sk']['S']:<22} "
                  f"owner={item.get('owner', {}).get('S', '-')} counter={item['counter']['N']} "
                  f"finished={item.get('finished', {}).get('BOOL', False)}")
    print(f"\n== Dead letters in {QUEUE}")
    url = queue_url()
    seen = 0
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            letter = json.loads(m["Body"])
            payload = base64.b64decode(letter["payload_base64"]) if letter.get("payload_base64") else None
            print(f"{letter['id']}  reason={letter['reason']!r}  payload={payload!r}")
            seen += 1
        if seen > 100:
            break
    if seen == 0:
        print("(none)")


KPL_MAGIC = b"\xf3\x89\x9a\xc2"


def kinesis_produce(stream):
    """Creates `stream` with 2 shards and puts 60 Kinesis records: every third a KPL aggregate
    of 10 user records built by aws-kinesis-agg (AWS's reference aggregator), the others plain
    records. Every user record is `{"n": <n>, "user": "u<n % 7>"}` under partition key
    `u<n % 7>`, except one inside an aggregate, which is not JSON (poison for a
    `payload_format: json` stream: dead-lettered with its sequence and sub-sequence number)."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    kinesis = client("kinesis")
    try:
        kinesis.create_stream(StreamName=stream, ShardCount=2)
    except kinesis.exceptions.ResourceInUseException:
        sys.exit(f"stream {stream} exists already: start from a fresh stack (stack.py down, up)")
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1})
    poison = 45
    entries, n, aggregates, plain = [], 0, 0, 0
    for i in range(60):
        if i % 3 == 0:
            agg = RecordAggregator()
            for m in range(n, n + 10):
                data = b"not json" if m == poison else json.dumps({"n": m, "user": f"u{m % 7}"}).encode()
                assert agg.add_user_record(f"u{m % 7}", data) is None
            key, _, data = agg.clear_and_get().get_contents()
            entries.append({"PartitionKey": key, "Data": data})
            n, aggregates = n + 10, aggregates + 1
        else:
            entries.append({"PartitionKey": f"u{n % 7}", "Data": json.dumps({"n": n, "user": f"u{n % 7}"}).encode()})
            n, plain = n + 1, plain + 1
    failed = kinesis.put_records(StreamName=stream, Records=entries)["FailedRecordCount"]
    if failed:
        sys.exit(f"{failed} records were not put")
    print(f"stream {stream} (2 shards): {len(entries)} Kinesis records put, {aggregates} of them KPL "
          f"aggregates of 10 user records (aws-kinesis-agg) and {plain} plain: {n} user records, "
          f"one of them (n={poison}, inside an aggregate) not JSON")


def _shard_records(kinesis, stream, shard):
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = []
    while it:
        page = kinesis.get_records(ShardIterator=it, Limit=10000)
        if not page["Records"]:
            break
        records.extend(page["Records"])
        it = page.get("NextShardIterator")
    return records


def kinesis_landed(stream):
    """Exit 0 when the checkpoint of every shard of `stream` is its last user record (the
    state table's sortable form: the sequence number padded to 128 digits, plus the
    sub-sequence number padded to 10 for a KPL user record)."""
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    kinesis, ddb = client("kinesis"), client("dynamodb")
    behind = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        records = _shard_records(kinesis, stream, shard_id)
        if not records:
            continue
        last = records[-1]
        want = last["SequenceNumber"].zfill(128)
        if last["Data"].startswith(KPL_MAGIC):
            users = list(iter_deaggregate_records(last, data_format="Boto3"))
            want += str(users[-1]["kinesis"]["subSequenceNumber"]).zfill(10)
        item = ddb.get_item(TableName=TABLE, Key={"pk": {"S": f"kinesis#{stream}#{shard_id}"}, "sk": {"S": "checkpoint"}}).get("Item")
        if not item or item["last"]["S"] != want:
            behind.append(shard_id)
    if behind:
        sys.exit(f"not landed yet: {', '.join(behind)}")


if __name__ == "__main__":
    commands = {"up": up, "down": down, "create": create, "inspect": inspect}
    with_stream = {"kinesis-produce": kinesis_produce, "kinesis-landed": kinesis_landed}
    if len(sys.argv) == 2 and sys.argv[1] in commands:
        commands[sys.argv[1]]()
    elif len(sys.argv) == 3 and sys.argv[1] in with_stream:
        with_stream[sys.argv[1]](sys.argv[2])
    else:
        sys.exit(__doc__)
