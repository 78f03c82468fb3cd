"""moto's server, with DynamoDB requests handled one at a time (transactions isolated as on AWS).

moto 5 runs each TransactWriteItems by deep-copying the tables it touches and, when the
transaction is cancelled (a condition failed), putting the copies back. Its server handles
requests on threads, so every write another request made between that copy and the
rollback is silently undone: a PutItem or a whole transaction that was answered 200 is gone.
On AWS a cancelled transaction changes nothing and touches no other write. Conditional
commits that race each other (commit-log positions, zombie commits after a rebalance, lease
takeovers) cancel transactions routinely, so on plain moto a test could see a committed entry
vanish. Holding one lock per DynamoDB request makes a transaction and its rollback atomic
against every other DynamoDB request; the other services keep moto's threads. S3 Tables'
GetTable gets AWS's type for `managedByService` (see s3tables_types_as_on_aws).

Usage: python moto_server.py [moto_server arguments], e.g. -H 127.0.0.1 -p 5055.
"""
import re
import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_DYNAMODB = threading.RLock()


def serialize_dynamodb():
    """Makes every DynamoDB request of this process run alone."""
    if getattr(DynamoHandler.call_action, "_serialized", False):
        return
    call_action = DynamoHandler.call_action

    def serialized(self):
        with _DYNAMODB:
            return call_action(self)

    serialized._serialized = True
    DynamoHandler.call_action = serialized


def s3tables_types_as_on_aws():
    """Two fields of moto 5.2.5's S3 Tables answers have another type than AWS's, and the Rust
    SDK (aws-sdk-s3tables, used by iceberg-catalog-s3tables) refuses to parse them: GetTable's
    `managedByService` is a string on AWS (the managing service, absent for a customer's
    table; moto sends `false`, now null, which the SDK reads as absent), and
    UpdateTableMetadataLocation's `namespace` is a list of names (moto sends one string)."""
    import json

    from moto.s3tables.models import Table
    from moto.s3tables.responses import S3TablesResponse

    if getattr(Table, "_types_as_on_aws", False):
        return
    init = Table.__init__

    def table_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if self.managed_by_service is False:
            self.managed_by_service = None

    update = S3TablesResponse.update_table_metadata_location

    def update_metadata_location(self):
        status, headers, body = update(self)
        answer = json.loads(body)
        if isinstance(answer.get("namespace"), str):
            answer["namespace"] = [answer["namespace"]]
        return status, headers, json.dumps(answer)

    Table.__init__ = table_init
    S3TablesResponse.update_table_metadata_location = update_metadata_location
    Table._types_as_on_aws = True


if __name__ == "__main__":
    serialize_dynamodb()
    s3tables_types_as_on_aws()
    sys.argv[0] = re.sub(r"(-script\.pyw|\.exe)?$", "", sys.argv[0])
    sys.exit(main())
