"""Pure: the id types of the mesh and the rules a raw id must pass.

Model, vmodel and instance ids become etcd key segments (`registry/<modelId>`)
and directory names in the adapter's model root, so every id that enters the
system from a user or the wire goes through one of the `parse_*` functions
here. The NewTypes keep the three id spaces apart for mypy; they cost nothing
at run time. Callers: records.py, the router's servicers, the operator's
registration code, the adapter.
"""

from __future__ import annotations

import unicodedata
from typing import NewType

ModelId = NewType("ModelId", str)
"""A concrete model (`<isvc>__isvc-<hash>` for InferenceServices)."""

VModelId = NewType("VModelId", str)
"""A virtual model: an alias that points at a concrete model."""

InstanceId = NewType("InstanceId", str)
"""One router instance (the last 12 chars of its pod name)."""

MAX_ID_BYTES = 255
"""Longest id accepted, in bytes of UTF-8: the most one file-name component may hold on
Linux (NAME_MAX), since the adapter makes `<model root>/<modelId>` a directory. Ids the
operator makes are far shorter: a 63-character InferenceService name + `__isvc-` + 10 hex."""

_SHOWN_CHARS = 60  # how much of a rejected id an error message repeats


class InvalidIdError(ValueError):
    """A raw string is not a valid id; `kind`, `raw` and `reason` say why."""

    def __init__(self, kind: str, raw: str, reason: str) -> None:
        shown = raw if len(raw) <= _SHOWN_CHARS else raw[:_SHOWN_CHARS] + "..."
        super().__init__(f"invalid {kind} id {shown!r}: {reason}")
        self.kind = kind
        self.raw = raw
        self.reason = reason


def id_problem(raw: str) -> str | None:
    """Say why `raw` cannot be an id, or return None when it can.

    An id is 1..255 bytes of UTF-8, is not '.' or '..', and holds no '/', no
    control character (NUL, C0, DEL, C1) and no lone surrogate: each of those
    would break a key segment, a directory name or a log line. Dots elsewhere
    ('a..b', '...') are harmless inside one path segment and are allowed.
    """
    if not raw:
        return "must not be empty"
    size = _utf8_size(raw)
    if size > MAX_ID_BYTES:
        return f"must be at most {MAX_ID_BYTES} bytes of UTF-8, got {size}"
    if raw in (".", ".."):
        return "must not be '.' or '..'"
    if "/" in raw:
        return "must not contain '/'"
    for char in raw:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"must not contain control character U+{ord(char):04X}"
        if category == "Cs":
            return f"must not contain lone surrogate U+{ord(char):04X}"
    return None


def _utf8_size(raw: str) -> int:
    # "surrogatepass" so that a lone surrogate gets a size instead of an error; the
    # character loop then refuses it.
    return len(raw.encode("utf-8", "surrogatepass"))


def _checked(kind: str, raw: str) -> str:
    problem = id_problem(raw)
    if problem is not None:
        raise InvalidIdError(kind, raw, problem)
    return raw


def parse_model_id(raw: str) -> ModelId:
    """Return `raw` as a ModelId, or raise InvalidIdError (a ValueError)."""
    return ModelId(_checked("model", raw))


def parse_vmodel_id(raw: str) -> VModelId:
    """Return `raw` as a VModelId, or raise InvalidIdError (a ValueError)."""
    return VModelId(_checked("vmodel", raw))


def parse_instance_id(raw: str) -> InstanceId:
    """Return `raw` as an InstanceId, or raise InvalidIdError (a ValueError)."""
    return InstanceId(_checked("instance", raw))
