"""moto's server, with DynamoDB requests handled one at a time (transactions isolated as on AWS).

moto 5 runs each TransactWriteItems by deep-copying the tables it touches and, when the
transaction is cancelled (a condition failed), putting the copies back. Its server handles
requests on threads, so every write another request made between that copy and the
rollback is silently undone: a PutItem or a whole transaction that was answered 200 is gone.
On AWS a cancelled transaction changes nothing and touches no other write. Conditional
commits that race each other (commit-log positions, zombie commits after a rebalance, lease
takeovers) cancel transactions routinely, so on plain moto a test could see a committed entry
vanish. Holding one lock per DynamoDB request makes a transaction and its rollback atomic
against every other DynamoDB request; the other services keep moto's threads.

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


if __name__ == "__main__":
    serialize_dynamodb()
    sys.argv[0] = re.sub(r"(-script\.pyw|\.exe)?$", "", sys.argv[0])
    sys.exit(main())
