#!/usr/bin/env python3
"""Reads the Bronze Iceberg table back with pyiceberg and with DuckDB, for tests and `make run`.

    read_iceberg.py <sqlite catalog file | glue | glue:<account id>> <warehouse> [namespace.table]

Prints one JSON object: `pyiceberg` and `duckdb` (the rows each engine read, payload_base64
as base64, timestamp as epoch microseconds), `files` (the data files the current snapshot
lists) and `summary` (the current snapshot's summary). pyiceberg opens the SQL catalog the
publisher wrote (catalog name `bronze`) or the Glue Data Catalog; DuckDB reads exactly the
Parquet files the table lists (copied to a temporary directory when they are not local), so
neither sees an orphan. S3 and Glue use the connector's environment (AWS_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
"""
import base64
import datetime
import json
import os
import sys
import tempfile

import duckdb
from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.catalog.sql import SqlCatalog

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
COLUMNS = ["source", "stream", "partition", "cursor", "cursor_sortable", "group", "key",
           "key_encoding", "headers", "timestamp", "run_id", "payload_encoding", "payload",
           "payload_base64", "schema_id", "schema_version", "object_key", "log_position"]


def plain(row):
    out = {}
    for name in COLUMNS:
        value = row[name]
        if name == "payload_base64" and value is not None:
            value = base64.b64encode(value).decode()
        elif name == "timestamp" and value is not None:
            value = (value - EPOCH) // datetime.timedelta(microseconds=1)
        elif name == "headers" and value is not None:
            value = [{"key": h["key"], "value": h["value"],
                      "value_base64": None if h["value_base64"] is None
                      else base64.b64encode(h["value_base64"]).decode()} for h in value]
        out[name] = value
    return out


def open_catalog(spec, warehouse):
    """The SQL catalog on a SQLite file, or Glue for `glue` / `glue:<account id>`."""
    env = os.environ.get
    props = {
        "warehouse": warehouse,
        "s3.endpoint": env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
        "s3.region": env("AWS_REGION"),
        "s3.access-key-id": env("AWS_ACCESS_KEY_ID"),
        "s3.secret-access-key": env("AWS_SECRET_ACCESS_KEY"),
    }
    if spec == "glue" or spec.startswith("glue:"):
        props.update({
            "glue.id": spec.partition(":")[2] or None,
            "glue.endpoint": env("AWS_ENDPOINT_URL_GLUE") or env("AWS_ENDPOINT_URL"),
            "glue.region": env("AWS_REGION"),
            "glue.access-key-id": env("AWS_ACCESS_KEY_ID"),
            "glue.secret-access-key": env("AWS_SECRET_ACCESS_KEY"),
        })
        return GlueCatalog("bronze", **{k: v for k, v in props.items() if v})
    props["uri"] = f"sqlite:///{spec}"
    return SqlCatalog("bronze", **{k: v for k, v in props.items() if v})


def main():
    spec, warehouse = sys.argv[1], sys.argv[2]
    ident = sys.argv[3] if len(sys.argv) > 3 else "bronze.records"
    table = open_catalog(spec, warehouse).load_table(ident)
    snapshot = table.current_snapshot()
    arrow = table.scan().to_arrow()
    rows = [plain(r) for r in arrow.to_pylist()]
    files = [t.file.file_path for t in table.scan().plan_files()]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    duck = []
    with tempfile.TemporaryDirectory() as tmp:
        local = []
        for n, f in enumerate(files):
            if f.startswith("file://"):
                local.append(f.removeprefix("file://"))
                continue
            copy = os.path.join(tmp, f"{n}.parquet")
            with table.io.new_input(f).open() as src, open(copy, "wb") as dst:
                dst.write(src.read())
            local.append(copy)
        if local:
            rel = con.execute("SELECT * FROM read_parquet(?)", [local])
            names = [d[0] for d in rel.description]
            duck = [plain(dict(zip(names, r))) for r in rel.fetchall()]
    summary = dict(snapshot.summary.additional_properties) if snapshot else {}
    if snapshot:
        summary["operation"] = str(snapshot.summary.operation.value)
    json.dump({"pyiceberg": rows, "duckdb": duck, "files": files, "summary": summary},
              sys.stdout, default=str)


if __name__ == "__main__":
    main()
