"""Records the garbage-collection pauses of a router process (bench/mesh.py, G7 and G10).

bench/mesh.py copies this file (with statserver.py) next to a `sitecustomize.py` that
imports it, in a temp dir put on PYTHONPATH of one router only (harness.install_hooks), so
it is installed before `mmesh.router` runs. A
`gc.callbacks` hook times every collection of CPython's cyclic collector (it runs inside
the event loop's thread, so a pause stalls every request in flight). The hook costs two
perf_counter() calls per collection and nothing between collections.

Served as JSON by an idle HTTP thread on 127.0.0.1:$MMBENCH_PAUSE_PORT: per generation the
number of collections and their total milliseconds, and every pause of 1 ms or more as
[wall time at its end, generation, milliseconds] (the last 100,000).
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from typing import Any

from statserver import serve_json

COUNTS = [0, 0, 0]
TOTAL_MS = [0.0, 0.0, 0.0]
PAUSES: deque[tuple[float, int, float]] = deque(maxlen=100_000)
_started = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1e3
    gen = int(info["generation"])
    COUNTS[gen] += 1
    TOTAL_MS[gen] += ms
    if ms >= 1.0:
        PAUSES.append((time.time(), gen, round(ms, 3)))


def _snapshot() -> dict[str, Any]:
    return {"counts": COUNTS, "total_ms": TOTAL_MS, "pauses": list(PAUSES)}


def _install() -> None:
    port = int(os.environ.get("MMBENCH_PAUSE_PORT", "0"))
    if port:
        gc.callbacks.append(_on_gc)
        serve_json(port, _snapshot, "mmbench-pauses")


_install()
