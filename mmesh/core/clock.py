"""The one wall clock of the registry's times: epoch milliseconds, as records store them.

Pure modules take `now_ms` as an argument; only I/O code calls this."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
