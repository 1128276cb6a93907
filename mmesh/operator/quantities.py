"""Pure: Kubernetes resource quantities as bytes, and bytes back as a quantity.

Callers: deployment.py sizes the models emptyDir from the runtime containers' memory limits.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)")
_SUFFIXES: dict[str, int | Decimal] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_quantity(raw: str) -> int | None:
    """Bytes in a Kubernetes quantity ("1Gi", "512M", "1e9"), rounded up; None if malformed."""
    match = _QUANTITY.fullmatch(raw.strip())
    if match is None or match[2] not in _SUFFIXES:
        return None
    try:
        value = Decimal(match[1]) * _SUFFIXES[match[2]]
    except InvalidOperation:
        return None
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def format_bytes(size_bytes: int) -> str:
    """A quantity string: whole Gi or Mi when exact, else plain bytes."""
    for suffix in ("Gi", "Mi"):
        unit = _SUFFIXES[suffix]
        if isinstance(unit, int) and size_bytes % unit == 0:
            return f"{size_bytes // unit}{suffix}"
    return str(size_bytes)
