"""Id rules: what may become an etcd key segment and a directory name."""

from __future__ import annotations

import pytest

from mmesh.core.ids import (
    MAX_ID_BYTES,
    InvalidIdError,
    parse_instance_id,
    parse_model_id,
    parse_vmodel_id,
)

PARSERS = [
    pytest.param(parse_model_id, "model", id="model"),
    pytest.param(parse_vmodel_id, "vmodel", id="vmodel"),
    pytest.param(parse_instance_id, "instance", id="instance"),
]

VALID = [
    "mnist-svm",
    "mnist-svm__isvc-6b2eb0b8bf",
    "a",
    "x" * MAX_ID_BYTES,
    "é" * (MAX_ID_BYTES // 2),
    "a-63-character-isvc-name-".ljust(63, "x") + "__isvc-0123456789",
    "with space",
    "ünïcode-模型",
    "...",
    ".hidden",
    "a..b",
    "a:b@c=d",
]

INVALID = [
    ("", "must not be empty"),
    ("x" * (MAX_ID_BYTES + 1), "at most 255 bytes of UTF-8, got 256"),
    ("é" * 128, "at most 255 bytes of UTF-8, got 256"),
    ("x" * 100_000, "got 100000"),
    (".", "'.' or '..'"),
    ("..", "'.' or '..'"),
    ("a/b", "must not contain '/'"),
    ("/lead", "must not contain '/'"),
    ("trail/", "must not contain '/'"),
    ("nul\x00byte", "U+0000"),
    ("tab\there", "U+0009"),
    ("new\nline", "U+000A"),
    ("del\x7f", "U+007F"),
    ("c1\x85", "U+0085"),
    ("bell\x07", "U+0007"),
    ("esc\x1b[31m", "U+001B"),
    ("lone\ud800surrogate", "lone surrogate U+D800"),
]


@pytest.mark.parametrize(("parse", "kind"), PARSERS)
@pytest.mark.parametrize("raw", VALID)
def test_valid_ids_are_returned_unchanged(parse, kind, raw):
    assert parse(raw) == raw


@pytest.mark.parametrize(("parse", "kind"), PARSERS)
@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_invalid_ids_raise_a_value_error_naming_the_rule(parse, kind, raw, reason):
    with pytest.raises(ValueError, match=f"invalid {kind} id") as info:
        parse(raw)
    assert isinstance(info.value, InvalidIdError)
    assert reason in str(info.value)
    assert info.value.kind == kind
    assert info.value.raw == raw


def test_long_ids_are_shortened_in_the_message():
    with pytest.raises(InvalidIdError) as info:
        parse_model_id("y" * 1000)
    assert len(str(info.value)) < 200
    assert info.value.raw == "y" * 1000
