"""moto's server (scripts/moto_server.py) that also adds up, per action, the requests it
serves and the thread CPU they cost, for finding what a bench's client costs moto.

Every second it writes {"<Response class>.<Action>": [calls, cpu_seconds], ...,
"__requests__": [requests, cpu_seconds]} to MOTO_CALLS_JSON (default /tmp/moto-calls.json);
GetRecords is split into ".data" and ".tail" (an answer under 200 bytes: no records).
Copy that file at a phase's start and end and subtract. Used for BENCHMARKS.md, "Where moto's
time goes":

    python runner/benches/moto_calls.py -H 127.0.0.1 -p 5074   # then stack.py up, the bench
"""
import collections
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import moto_server  # noqa: E402
from moto.core.responses import BaseResponse  # noqa: E402
from werkzeug.serving import WSGIRequestHandler  # noqa: E402

OUT = os.environ.get("MOTO_CALLS_JSON", "/tmp/moto-calls.json")
_lock = threading.Lock()
_actions = collections.defaultdict(lambda: [0, 0.0])
_requests = [0, 0.0]
_answer_bytes = {}

_enrich = BaseResponse._enrich_response
_call_action = BaseResponse.call_action
_handle = WSGIRequestHandler.handle


def enrich(headers, body):
    try:
        _answer_bytes[threading.get_ident()] = len(body)
    except TypeError:
        pass
    return _enrich(headers, body)


def call_action(self):
    started = time.thread_time()
    try:
        return _call_action(self)
    finally:
        spent = time.thread_time() - started
        try:
            key = f"{type(self).__name__}.{self._get_action()}"
        except Exception:  # an action moto cannot name still counts
            key = type(self).__name__
        if key.endswith("GetRecords"):
            key += ".tail" if _answer_bytes.get(threading.get_ident(), 0) < 200 else ".data"
        with _lock:
            _actions[key][0] += 1
            _actions[key][1] += spent


def handle(self):
    started = time.thread_time()
    try:
        return _handle(self)
    finally:
        with _lock:
            _requests[0] += 1
            _requests[1] += time.thread_time() - started


def dump():
    while True:
        time.sleep(1)
        with _lock:
            snapshot = {k: list(v) for k, v in _actions.items()}
            snapshot["__requests__"] = list(_requests)
        with open(OUT + ".tmp", "w") as f:
            json.dump(snapshot, f)
        os.replace(OUT + ".tmp", OUT)


if __name__ == "__main__":
    BaseResponse._enrich_response = staticmethod(enrich)
    BaseResponse.call_action = call_action
    WSGIRequestHandler.handle = handle
    threading.Thread(target=dump, daemon=True).start()
    moto_server.serialize_dynamodb()
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
