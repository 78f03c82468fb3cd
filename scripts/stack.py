#!/usr/bin/env python3
"""Local AWS stack for the connector: moto in server mode on 127.0.0.1.

  stack.py up        start moto (if not running) and create the bucket, table and queue
  stack.py down      stop moto
  stack.py create    create the bucket, table and queue on a running moto
  stack.py inspect   print landed objects, checkpoints, the commit log and DLQ entries

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
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(PORT)], stdout=log, stderr=log, start_new_session=True)
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
    items.sort(key=lambda i: (i["pk"]["S"], i["sk"]["S"] != "checkpoint", i["sk"]["S"]))
    for item in items:
        kind = "checkpoint" if item["sk"]["S"] == "checkpoint" else "commit    "
        print(f"{kind} {item['pk']['S']:<40} first={item['first']['S'].lstrip('0') or '0'} "
              f"last={item['last']['S'].lstrip('0') or '0'} records={item['records']['N']} "
              f"dead_lettered={item['dead_lettered']['N']} object={item.get('object_key', {}).get('S', '-').rsplit('/', 1)[-1]}")
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


if __name__ == "__main__":
    commands = {"up": up, "down": down, "create": create, "inspect": inspect}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]]()
