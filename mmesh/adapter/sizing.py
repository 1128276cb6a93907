"""Pure: how much memory a model is expected to take, from what is known about it."""

from __future__ import annotations

import math


def estimate_size_bytes(
    disk_size_bytes: int | None, *, multiplier: float, default_bytes: int
) -> int:
    """Disk size x multiplier, or the default when the disk size is unknown or zero."""
    if not disk_size_bytes or disk_size_bytes <= 0:
        return default_bytes
    return max(1, math.ceil(disk_size_bytes * multiplier))
