#!/usr/bin/env python3
"""Runs a SQL query over the Bronze Iceberg table, for `make run` and by hand.

    query_iceberg.py <sqlite catalog file> <warehouse> [SQL] [namespace.table]

pyiceberg opens the SQL catalog the publisher wrote (catalog name `bronze`) and reads the
table's current snapshot; DuckDB runs the SQL over it as the view `records`. An s3://
warehouse is read with the same environment the connector uses (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). The default query counts records per partition
with their cursor and time ranges, then the snapshot's watermarks are printed.
"""
import os
import sys

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

DEFAULT_SQL = """
SELECT source, stream, "partition", count(*) AS records,
       min(cursor_sortable) AS first_cursor, max(cursor_sortable) AS last_cursor,
       min("timestamp") AS first_time, max("timestamp") AS last_time,
       count(payload) AS json_payloads, count(payload_base64) AS binary_payloads
FROM records GROUP BY ALL ORDER BY ALL
"""


def main():
    db, warehouse = sys.argv[1], sys.argv[2]
    sql = sys.argv[3] if len(sys.argv) > 3 else DEFAULT_SQL
    ident = sys.argv[4] if len(sys.argv) > 4 else "bronze.records"
    props = {"uri": f"sqlite:///{db}", "warehouse": warehouse}
    env = {
        "s3.endpoint": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "s3.region": os.environ.get("AWS_REGION"),
        "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID"),
        "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
    }
    props.update({k: v for k, v in env.items() if v})
    table = SqlCatalog("bronze", **props).load_table(ident)
    snapshot = table.current_snapshot()
    records = table.scan().to_arrow()  # noqa: F841 (DuckDB reads it by name)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("records", records)
    print(con.sql(sql))
    if snapshot:
        print(f"snapshot {snapshot.snapshot_id}, {len(table.scan().plan_files())} data files")
        for key, value in sorted(snapshot.summary.additional_properties.items()):
            if key.startswith("bronze.watermark."):
                print(f"  {key.removeprefix('bronze.watermark.')}: {value}")


if __name__ == "__main__":
    main()
