"""Records the event-loop stalls of a router process (bench/mesh.py, G10), and where the loop
was when each happened.

Installed like pause_hook.py (harness.install_hooks). A watchdog thread asks the loop to run a
no-op every 20 ms (`call_soon_threadsafe`) and waits for it. While the loop has not run it,
the thread samples the loop thread's Python stack every 2 ms. A wait of 10 ms or more is a
stall: its length and the innermost `mmesh` frame seen most often while it lasted are kept.
Under saturation a "stall" is the queue of ready callbacks, not one long one; the frames then
spread over the request path.

Served as JSON on 127.0.0.1:$MMBENCH_STALL_PORT: the number of checks, and every stall as
[wall time at its end, milliseconds, frame] (the last 10,000).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import Counter, deque
from types import FrameType
from typing import Any

from statserver import serve_json

CHECK_EVERY_S = 0.02
SAMPLE_EVERY_S = 0.002
STALL_S = 0.010
STALLS: deque[tuple[float, float, str]] = deque(maxlen=10_000)
CHECKS = [0]


def _where(frame: FrameType | None) -> str:
    """The innermost frame of our code (else the innermost frame) as `file:function`."""
    first = ""
    while frame is not None:
        code = frame.f_code
        name = f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_name}:{frame.f_lineno}"
        first = first or name
        if "/mmesh/" in code.co_filename:
            return name
        frame = frame.f_back
    return first


def _watch(loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
    while not loop.is_closed():
        ran = threading.Event()
        started = time.perf_counter()
        try:
            loop.call_soon_threadsafe(ran.set)
        except RuntimeError:
            return
        seen: Counter[str] = Counter()
        while not ran.wait(SAMPLE_EVERY_S):
            seen[_where(sys._current_frames().get(thread_id))] += 1
        CHECKS[0] += 1
        waited = time.perf_counter() - started
        if waited >= STALL_S:
            where = seen.most_common(1)[0][0] if seen else "?"
            STALLS.append((time.time(), round(waited * 1e3, 3), where))
        time.sleep(CHECK_EVERY_S)


def _snapshot() -> dict[str, Any]:
    return {"checks": CHECKS[0], "stalls": list(STALLS)}


def _install() -> None:
    port = int(os.environ.get("MMBENCH_STALL_PORT", "0"))
    if not port:
        return
    watched: list[bool] = []
    loop_classes: list[Any] = [asyncio.BaseEventLoop]
    try:  # the router runs on uvloop unless MM_EVENT_LOOP=asyncio
        import uvloop

        loop_classes.append(uvloop.Loop)
    except ImportError:
        pass
    for cls in loop_classes:
        cls.run_forever = _watching(cls.run_forever, watched)
    serve_json(port, _snapshot, "mmbench-stalls")


def _watching(run_forever: Any, watched: list[bool]) -> Any:
    """`run_forever` that first starts the watchdog (once per process)."""

    def watching_run_forever(self: asyncio.AbstractEventLoop) -> None:
        if not watched:
            watched.append(True)
            args = (self, threading.get_ident())
            threading.Thread(target=_watch, args=args, name="mmbench-stalls", daemon=True).start()
        run_forever(self)

    return watching_run_forever


_install()
