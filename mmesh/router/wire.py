"""Pure: read and rewrite one string field of a protobuf message in its raw bytes.

The router never decodes a whole `ModelInferRequest` (performance.md G3): it
scans the top-level fields of the raw request for `model_name` (field 1),
skipping every other field by its length, and splices a new value in when the
concrete model id differs. Nested paths ([2, 2] = field 2 of the message in
field 2) follow embedded messages. Proto3 rules apply: the last occurrence of
a field wins, and occurrences of an embedded message merge.

Only the fields on the path are inspected: a 1 MiB tensor is skipped, never
copied, and a rewrite copies the buffer once. Malformed input raises
`InvalidRequest`. Callers: the router's inference servicer and forwarder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mmesh.router.errors import InvalidRequest

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_FIELD_NUMBER = 2**29 - 1
_MAX_VARINT_BYTES = 10
_FIXED_SIZE = {_I64: 8, _I32: 4}

Buffer = bytes | memoryview
_Piece = bytes | memoryview


class _Span(NamedTuple):
    """One field: its number, wire type, where it starts and where its value lies."""

    number: int
    wire_type: int
    start: int
    value_start: int
    value_end: int


def read_string_field(data: Buffer, path: Sequence[int]) -> str | None:
    """The string at `path` (field numbers, outermost first), or None when absent.

    The last occurrence of the field wins; an embedded message that occurs
    several times is read as the merge of its occurrences. Raises
    `InvalidRequest` for malformed bytes along the way (truncated varint or
    length, group or unknown wire type, field number 0, a field on the path
    that is not length-delimited, invalid UTF-8).
    """
    _check_path(path)
    buf = _octets(data)
    span = _find_last(buf, 0, len(buf), path)
    if span is None:
        return None
    try:
        return str(buf[span[0] : span[1]], "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"malformed request: field {path[-1]} is not UTF-8") from exc


def replace_string_field(data: bytes, path: Sequence[int], value: str) -> bytes:
    """`data` with the string at `path` set to `value`; `data` itself if it already is.

    Earlier occurrences of the field are dropped and one new occurrence takes
    the place of the first (or its field-number place when absent). Enclosing
    messages get new length prefixes; every other byte is kept as it was,
    unknown fields included. The result is built with a single copy.
    """
    if read_string_field(data, path) == value:
        return data
    view = memoryview(data)
    return b"".join(_rewrite(view, 0, len(view), path, value.encode("utf-8")))


# ---------------------------------------------------------------- scanning


def _check_path(path: Sequence[int]) -> None:
    if len(path) == 1 and 0 < path[0] <= _MAX_FIELD_NUMBER:
        return
    if not path:
        raise ValueError("a field path needs at least one field number")
    for number in path:
        if not 0 < number <= _MAX_FIELD_NUMBER:
            raise ValueError(f"invalid field number {number} in path {list(path)}")


def _octets(data: Buffer) -> Buffer:
    """A view indexed by byte, whatever the format of a memoryview passed in."""
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        return data.cast("B")
    return data


def _malformed(reason: str) -> InvalidRequest:
    return InvalidRequest(f"malformed request: {reason}")


def _read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); one-byte varints take the short way."""
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
    return _read_long_varint(buf, pos, end)


def _read_long_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    limit = min(end, pos + _MAX_VARINT_BYTES)
    while pos < limit:
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result, pos
        shift += 7
    if pos >= end:
        raise _malformed(f"truncated varint at byte {pos}")
    raise _malformed(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def _next_field(buf: Buffer, pos: int, end: int) -> tuple[int, int, int, int]:
    """(field number, wire type, value start, value end) of the field at `pos` < `end`.

    For a length-delimited field the value starts after its length prefix.
    One-byte keys and lengths, the common case, skip the varint call.
    """
    key = buf[pos]
    key, pos = (key, pos + 1) if key < 0x80 else _read_long_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if wire_type == _LEN:
        length = buf[pos] if pos < end else 0x80
        length, pos = (length, pos + 1) if length < 0x80 else _read_long_varint(buf, pos, end)
        stop = pos + length
    elif wire_type == _VARINT:
        stop = _read_varint(buf, pos, end)[1]
    elif wire_type in _FIXED_SIZE:
        stop = pos + _FIXED_SIZE[wire_type]
    else:  # 3 and 4 are the deprecated groups; 6 and 7 do not exist
        raise _malformed(f"field {number} has unsupported wire type {wire_type}")
    if stop > end or not 0 < number <= _MAX_FIELD_NUMBER:
        raise _malformed(f"field {number} at byte {pos} is invalid or runs past its message")
    return number, wire_type, pos, stop


def _find_last(buf: Buffer, start: int, end: int, path: Sequence[int]) -> tuple[int, int] | None:
    """Value bounds of the winning occurrence of `path` within buf[start:end]."""
    target = path[0]
    found = None
    pos = start
    while pos < end:
        number, wire_type, value_start, pos = _next_field(buf, pos, end)
        if number != target:
            continue
        if wire_type != _LEN:
            raise _malformed(f"field {number} has wire type {wire_type}, expected 2")
        if len(path) == 1:
            found = (value_start, pos)
        else:  # occurrences of an embedded message merge: a later hit overrides
            found = _find_last(buf, value_start, pos, path[1:]) or found
    return found


def _spans(view: memoryview, start: int, end: int) -> list[_Span]:
    spans = []
    pos = start
    while pos < end:
        number, wire_type, value_start, value_end = _next_field(view, pos, end)
        spans.append(_Span(number, wire_type, pos, value_start, value_end))
        pos = value_end
    return spans


# ---------------------------------------------------------------- rewriting


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _rewrite(
    view: memoryview, start: int, end: int, path: Sequence[int], encoded: bytes
) -> list[_Piece]:
    """Pieces that, joined, are view[start:end] with `path` set to `encoded`."""
    target = path[0]
    spans = _spans(view, start, end)
    hits = [span for span in spans if span.number == target]
    if any(hit.wire_type != _LEN for hit in hits):
        raise _malformed(f"field {target} is not length-delimited")
    if len(path) == 1:
        body: list[_Piece] = [encoded]
    else:  # rewrite inside the last occurrence; earlier ones merge before it
        inner = (hits[-1].value_start, hits[-1].value_end) if hits else (start, start)
        body = _rewrite(view, *inner, path[1:], encoded)
    length = sum(len(piece) for piece in body)
    field: list[_Piece] = [_encode_varint(target << 3 | _LEN), _encode_varint(length), *body]
    edits = _edits(spans, target, field, end=end, replace_all=len(path) == 1)
    return _splice(view, start, end, edits)


def _edits(
    spans: list[_Span], target: int, field: list[_Piece], *, end: int, replace_all: bool
) -> list[tuple[int, int, list[_Piece]]]:
    """Cuts (start, end, replacement), in buffer order, that put `field` in place.

    A leaf field replaces its first occurrence and drops the others; an
    embedded message replaces its last occurrence only. An absent field goes
    before the first field with a higher number, as a serializer would put it.
    """
    hits = [span for span in spans if span.number == target]
    if not hits:
        at = next((span.start for span in spans if span.number > target), end)
        return [(at, at, field)]
    if not replace_all:
        return [(hits[-1].start, hits[-1].value_end, field)]
    first, *rest = hits
    return [(first.start, first.value_end, field)] + [(h.start, h.value_end, []) for h in rest]


def _splice(
    view: memoryview, start: int, end: int, edits: list[tuple[int, int, list[_Piece]]]
) -> list[_Piece]:
    pieces: list[_Piece] = []
    cursor = start
    for cut_start, cut_end, replacement in edits:
        pieces.append(view[cursor:cut_start])
        pieces.extend(replacement)
        cursor = cut_end
    pieces.append(view[cursor:end])
    return pieces
