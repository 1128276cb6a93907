"""Counts full protobuf decodes of V2 inference messages inside the router process.

bench/run.py and bench/mesh.py copy this file (with statserver.py) into a temp dir that
a `sitecustomize.py` imports it from, on PYTHONPATH for the router process only
(harness.install_hooks). Python imports `sitecustomize` at start-up,
before `mmesh.router` runs, so the wrappers below are in place before any gRPC handler
or REST route could capture a parse function. It wraps, on the generated classes
`inference.ModelInferRequest` and `inference.ModelInferResponse` (upb lets a generated
class's attributes be replaced): `FromString`, `ParseFromString` and `MergeFromString`.
Each call increments a counter and then calls the original.

The counts are served as JSON by a small HTTP server thread on 127.0.0.1:
$MMBENCH_DECODE_PORT. The thread is idle unless the benchmark asks.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

from statserver import serve_json

COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
WRAPPED: list[str] = []


def _bump(key: str) -> None:
    with _LOCK:
        COUNTS[key] += 1


def _wrap_class(cls: Any, label: str) -> None:
    from_string = cls.FromString
    parse = cls.ParseFromString
    merge = cls.MergeFromString

    def counted_from_string(data: Any) -> Any:
        _bump(f"{label}.FromString")
        return from_string(data)

    def counted_parse(self: Any, data: Any) -> Any:
        _bump(f"{label}.ParseFromString")
        return parse(self, data)

    def counted_merge(self: Any, data: Any) -> Any:
        _bump(f"{label}.MergeFromString")
        return merge(self, data)

    cls.FromString = staticmethod(counted_from_string)
    cls.ParseFromString = counted_parse
    cls.MergeFromString = counted_merge
    WRAPPED.append(label)


def _snapshot() -> dict[str, Any]:
    with _LOCK:
        return {"counts": dict(COUNTS), "wrapped": list(WRAPPED)}


def _install() -> None:
    port = int(os.environ.get("MMBENCH_DECODE_PORT", "0"))
    if not port:
        return
    from google.protobuf import descriptor_pool, message_factory

    from mmesh.core.proto import grpc_predict_v2_pb2 as v2

    for cls in (v2.ModelInferRequest, v2.ModelInferResponse):
        _wrap_class(cls, cls.DESCRIPTOR.full_name)
        # The class a descriptor-pool lookup returns must be the wrapped one too.
        pooled = message_factory.GetMessageClass(
            descriptor_pool.Default().FindMessageTypeByName(cls.DESCRIPTOR.full_name)
        )
        if pooled is not cls:
            _wrap_class(pooled, cls.DESCRIPTOR.full_name + "(pool)")
    serve_json(port, _snapshot, "mmbench-decodes")


_install()
