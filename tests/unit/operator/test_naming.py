"""Concrete model ids, Deployment names and label-value checks."""

from __future__ import annotations

import hashlib

import pytest

from mmesh.core.ids import id_problem
from mmesh.operator.errors import InvalidRuntime, InvalidSpec
from mmesh.operator.naming import (
    canonical_json,
    check_isvc_name,
    concrete_model_id,
    deployment_name,
    is_label_value,
    parse_concrete_model_id,
    spec_hash,
)


def test_hash_is_first_ten_hex_of_sha1_of_canonical_json() -> None:
    spec = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    text = '{"a":{"x":"é","y":[1,2]},"b":1}'
    assert canonical_json(spec) == text
    assert spec_hash(spec) == hashlib.sha1(text.encode()).hexdigest()[:10]


def test_concrete_model_id_shape_and_round_trip() -> None:
    model_id = concrete_model_id("example-sklearn-isvc", {"a": 1})
    assert model_id == f"example-sklearn-isvc__isvc-{spec_hash({'a': 1})}"
    assert id_problem(model_id) is None
    assert parse_concrete_model_id(model_id) == ("example-sklearn-isvc", "isvc")


@pytest.mark.parametrize(
    "raw", ["plain", "a__isvc-123", "a__isvc-zzzzzzzzzz", "__isvc-0123456789", "a__-0123456789"]
)
def test_parse_rejects_foreign_ids(raw: str) -> None:
    assert parse_concrete_model_id(raw) is None


def test_name_with_double_underscore_parses_from_the_right() -> None:
    assert parse_concrete_model_id("a__b__ksp-0123456789") == ("a__b", "ksp")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("a", True),
        ("example-sklearn-isvc", True),
        ("A.b_c-1", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("-a", False),
        ("a-", False),
        ("a b", False),
        ("a/b", False),
    ],
)
def test_label_values(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


def test_isvc_name_checks() -> None:
    check_isvc_name("example-sklearn-isvc")
    with pytest.raises(InvalidSpec, match="at most 63"):
        check_isvc_name("n" * 64)


def test_deployment_name() -> None:
    assert deployment_name("mlserver-1.x") == "modelmesh-serving-mlserver-1.x"
    assert deployment_name("rt", "mesh") == "mesh-rt"
    with pytest.raises(InvalidRuntime, match="at most 63"):
        deployment_name("r" * 50)
    with pytest.raises(InvalidRuntime, match="not a valid Deployment name"):
        deployment_name("Upper")
