"""Large payloads reuse freed heap memory instead of fresh pages from the kernel.

glibc serves an allocation above its mmap threshold (128 KiB to begin with) with new pages,
and hands the top of the heap back to the kernel whenever more than its trim threshold is
free. A router moving 1 MiB tensors makes and frees several such buffers per request, so with
the defaults every request pays for hundreds of page faults on fresh memory (bench G3: about
3.4 ms of CPU per 1 MiB request, 2.2 ms with the thresholds fixed; the cost also varied from
run to run as glibc moved its thresholds by itself). Fixed thresholds keep freed payload
buffers in the heap for the next request. The price is memory: up to TRIM_THRESHOLD_BYTES of
freed heap stays with the process after a burst of large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from mmesh.router.settings import MIB

MMAP_THRESHOLD_BYTES = 32 * MIB
"""Buffers below this come from the heap (glibc's own ceiling for the threshold it moves)."""
TRIM_THRESHOLD_BYTES = 64 * MIB
"""Free memory at the top of the heap beyond this goes back to the kernel."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_payload_buffers(
    *, mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> str | None:
    """Sets glibc's two thresholds for this process; None when done, else why not."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        return f"no glibc mallopt here ({exc})"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        return f"mallopt refused an mmap threshold of {mmap_threshold} bytes"
    if not mallopt(_M_TRIM_THRESHOLD, trim_threshold):
        return f"mallopt refused a trim threshold of {trim_threshold} bytes"
    return None
