#!/usr/bin/env python3
"""A small Iceberg REST catalog for the publisher's tests (no Docker, no Java).

    rest_catalog_server.py <catalog.db> <warehouse> [--token T]

Serves the part of the Iceberg REST OpenAPI that a writer uses (config, namespaces, tables:
create, load, exists, list, drop, and commit with requirements and updates) on 127.0.0.1 at a
free port, printed as the first line of stdout (`port N`). The tables live in pyiceberg's
`SqlCatalog` (catalog name `bronze`) on the SQLite file `catalog.db`, with table locations
under `warehouse`; the request and response bodies are pyiceberg's REST models, and a commit
is pyiceberg's `SqlCatalog.commit_table(table, requirements, updates)`: it validates every
requirement (assert-table-uuid, assert-ref-snapshot-id, ...) against the table as stored and
swaps the metadata location with a compare-and-set, so a commit planned on a stale table is
answered 409 (CommitFailedException), as the REST spec says.

A `/v1/config` request that asks for another warehouse is answered 404, and with `--token`
every request must carry `Authorization: Bearer <token>` (else 401): the tests see that the
client sends both. The server stops when its stdin closes (the test that started it ended)
or on SIGTERM.
"""
import json
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyiceberg.catalog.rest import ConfigResponse, TableResponse
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import CommitTableRequest, CommitTableResponse
from pyiceberg.table.sorting import SortOrder

# The REST spec's error codes for the exceptions pyiceberg's catalog raises.
ERRORS = {
    NoSuchNamespaceError: 404,
    NoSuchTableError: 404,
    NamespaceAlreadyExistsError: 409,
    TableAlreadyExistsError: 409,
    NamespaceNotEmptyError: 409,
    CommitFailedException: 409,
}


class HttpError(Exception):
    def __init__(self, code, kind, message):
        super().__init__(message)
        self.code, self.kind, self.message = code, kind, message


class Catalog:
    """The REST operations over one SqlCatalog. One request at a time: SQLite allows one
    writer, and a commit's requirements are still checked against the stored table (a
    publisher that planned on an older snapshot gets 409 whatever the interleaving)."""

    def __init__(self, db, warehouse, token):
        self.sql = SqlCatalog("bronze", uri=f"sqlite:///{db}", warehouse=warehouse)
        self.warehouse = warehouse
        self.token = token
        self.lock = threading.Lock()

    def route(self, method, path, query, body):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["v1"]:
            raise HttpError(404, "NotFound", f"no route {path}")
        parts = parts[1:]
        if parts == ["config"] and method == "GET":
            asked = query.get("warehouse", [None])[0]
            if asked is not None and asked != self.warehouse:
                raise HttpError(404, "NoSuchWarehouseException", f"no warehouse {asked}")
            return 200, ConfigResponse(defaults={}, overrides={}).model_dump_json()
        if parts == ["namespaces"]:
            if method == "GET":
                names = [list(ns) for ns in self.sql.list_namespaces()]
                return 200, json.dumps({"namespaces": names})
            if method == "POST":
                request = json.loads(body)
                ns = tuple(request["namespace"])
                self.sql.create_namespace(ns, request.get("properties") or {})
                return 200, json.dumps({"namespace": list(ns),
                                        "properties": request.get("properties") or {}})
        if len(parts) == 2 and parts[0] == "namespaces":
            ns = tuple(parts[1].split("\x1f"))
            if method in ("GET", "HEAD"):
                props = self.sql.load_namespace_properties(ns)
                return (200, json.dumps({"namespace": list(ns), "properties": props})) \
                    if method == "GET" else (204, None)
            if method == "DELETE":
                self.sql.drop_namespace(ns)
                return 204, None
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "tables":
            ns = tuple(parts[1].split("\x1f"))
            if method == "GET":
                tables = [{"namespace": list(t[:-1]), "name": t[-1]}
                          for t in self.sql.list_tables(ns)]
                return 200, json.dumps({"identifiers": tables})
            if method == "POST":
                return 200, self.create_table(ns, json.loads(body))
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "tables":
            ident = tuple(parts[1].split("\x1f")) + (parts[3],)
            if method in ("GET", "HEAD"):
                table = self.sql.load_table(ident)
                return (200, self.load_result(table)) if method == "GET" else (204, None)
            if method == "POST":
                request = CommitTableRequest.model_validate_json(body)
                table = self.sql.load_table(ident)
                response = self.sql.commit_table(table, request.requirements, request.updates)
                return 200, CommitTableResponse(
                    metadata=response.metadata,
                    metadata_location=response.metadata_location).model_dump_json()
            if method == "DELETE":
                self.sql.drop_table(ident)
                return 204, None
        raise HttpError(404 if method != "POST" else 400, "NotFound",
                        f"no route {method} {path}")

    def create_table(self, ns, request):
        if request.get("stage-create"):
            raise HttpError(400, "BadRequestException", "staged creation is not supported")
        schema = Schema.model_validate(request["schema"])
        kwargs = {"properties": request.get("properties") or {}}
        if request.get("location"):
            kwargs["location"] = request["location"]
        if request.get("partition-spec"):
            spec = dict(request["partition-spec"])
            # An unbound spec may leave out field ids: the catalog assigns them.
            spec["fields"] = [dict(f, **{"field-id": f.get("field-id", 1000 + n)})
                              for n, f in enumerate(spec.get("fields", []))]
            spec.setdefault("spec-id", 0)
            kwargs["partition_spec"] = PartitionSpec.model_validate(spec)
        if request.get("write-order"):
            kwargs["sort_order"] = SortOrder.model_validate(request["write-order"])
        table = self.sql.create_table(ns + (request["name"],), schema=schema, **kwargs)
        return self.load_result(table)

    @staticmethod
    def load_result(table):
        return TableResponse(metadata_location=table.metadata_location,
                             metadata=table.metadata, config={}).model_dump_json()


def handler(catalog):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # stderr, one line per request
            sys.stderr.write("rest-catalog: " + (fmt % args) + "\n")

        def serve(self):
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                if catalog.token and \
                        self.headers.get("Authorization") != f"Bearer {catalog.token}":
                    raise HttpError(401, "NotAuthorizedException", "a bearer token is required")
                with catalog.lock:
                    code, payload = catalog.route(self.command, url.path,
                                                  urllib.parse.parse_qs(url.query), body)
            except HttpError as e:
                code, payload = e.code, self.error(e.code, e.kind, e.message)
            except Exception as e:  # noqa: BLE001 - every failure is an HTTP answer
                code = next((c for t, c in ERRORS.items() if isinstance(e, t)), 500)
                payload = self.error(code, type(e).__name__, str(e))
            data = payload.encode() if payload is not None else b""
            self.send_response(code)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        @staticmethod
        def error(code, kind, message):
            return json.dumps({"error": {"message": message, "type": kind, "code": code}})

        do_GET = do_POST = do_DELETE = do_HEAD = serve

    return Handler


def main():
    args = sys.argv[1:]
    token = None
    if "--token" in args:
        i = args.index("--token")
        token = args[i + 1]
        del args[i:i + 2]
    db, warehouse = args
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Catalog(db, warehouse, token)))
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
