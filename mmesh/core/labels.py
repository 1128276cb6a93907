"""Pure: the placement label grammar shared by the operator (writer) and the router (reader).

A runtime pod advertises labels (its router's MM_LABELS): `mt:<format>`,
`mt:<format>:<version>`, `pv:<protocol>` and `rt:<runtime name>`. A model's type
(ModelInfo.type) is the labels it requires joined by `|`: `rt:<runtime>` when it names a
runtime, else `mt:<format>[:<version>]`, then `|pv:<protocol>` when it names a protocol.
A bare type without any `:` (`sklearn`) requires nothing, as in a mesh of one runtime.
"""

from __future__ import annotations

from collections.abc import Collection

MODEL_TYPE_PREFIX = "mt:"
PROTOCOL_PREFIX = "pv:"
RUNTIME_PREFIX = "rt:"
SEPARATOR = "|"


def model_type(
    format_name: str,
    format_version: str | None = None,
    *,
    runtime: str | None = None,
    protocol: str | None = None,
) -> str:
    """The model type string for a model's requirements (the one writer of the grammar)."""
    if runtime:
        return RUNTIME_PREFIX + runtime
    label = MODEL_TYPE_PREFIX + format_name
    if format_version:
        label += ":" + format_version
    if protocol:
        label += SEPARATOR + PROTOCOL_PREFIX + protocol
    return label


def required_labels(type_string: str) -> frozenset[str]:
    """The labels a model type asks of an instance (the one reader of the grammar)."""
    parts = (p.strip() for p in type_string.split(SEPARATOR))
    return frozenset(p for p in parts if ":" in p)


def satisfies(labels: Collection[str], required: frozenset[str]) -> bool:
    return required <= set(labels)
