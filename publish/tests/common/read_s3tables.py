#!/usr/bin/env python3
"""Reads a table of an S3 Tables table bucket as scripts/read_iceberg.py reads the others.

    read_s3tables.py s3tables:<table bucket ARN> <warehouse (unused)> <namespace.table>

pyiceberg 0.12 has no S3 Tables catalog: this asks S3 Tables (boto3, the connector's
AWS_ENDPOINT_URL / AWS_REGION / keys) for the table's current metadata location, opens it
with pyiceberg's StaticTable, and hands it to read_iceberg.main, so the rows, the files and
the summary are read by exactly the same code (pyiceberg and DuckDB on the listed files).
"""
import os
import sys

import boto3
from pyiceberg.table import StaticTable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
import read_iceberg  # noqa: E402


class S3TablesReader:
    def __init__(self, arn):
        env = os.environ.get
        self.arn = arn
        self.client = boto3.client(
            "s3tables",
            endpoint_url=env("AWS_ENDPOINT_URL_S3TABLES") or env("AWS_ENDPOINT_URL"),
            region_name=env("AWS_REGION"),
        )
        self.props = {k: v for k, v in {
            "s3.endpoint": env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
            "s3.region": env("AWS_REGION"),
            "s3.access-key-id": env("AWS_ACCESS_KEY_ID"),
            "s3.secret-access-key": env("AWS_SECRET_ACCESS_KEY"),
        }.items() if v}

    def load_table(self, ident):
        namespace, name = ident.split(".")
        table = self.client.get_table(tableBucketARN=self.arn, namespace=namespace, name=name)
        return StaticTable.from_metadata(table["metadataLocation"], properties=self.props)


def main():
    spec = sys.argv[1]
    if not spec.startswith("s3tables:"):
        sys.exit(f"expected s3tables:<table bucket ARN>, got {spec!r}")
    reader = S3TablesReader(spec.removeprefix("s3tables:"))
    read_iceberg.open_catalog = lambda _spec, _warehouse: reader
    read_iceberg.main()


if __name__ == "__main__":
    main()
