"""The label grammar: what the operator writes is what the router requires."""

from __future__ import annotations

import pytest

from mmesh.core.labels import model_type, required_labels, satisfies


@pytest.mark.parametrize(
    ("args", "kwargs", "written", "required"),
    [
        (("sklearn",), {}, "mt:sklearn", {"mt:sklearn"}),
        (("onnx", "1"), {"protocol": "grpc-v2"}, "mt:onnx:1|pv:grpc-v2",
         {"mt:onnx:1", "pv:grpc-v2"}),
        (("sklearn",), {"runtime": "mlserver-1.x"}, "rt:mlserver-1.x", {"rt:mlserver-1.x"}),
        (("sklearn",), {"runtime": "mlserver-1.x", "protocol": "v2"}, "rt:mlserver-1.x",
         {"rt:mlserver-1.x"}),
    ],
)  # fmt: skip
def test_written_type_is_read_back_as_its_labels(
    args: tuple[str, ...], kwargs: dict[str, str], written: str, required: set[str]
) -> None:
    assert model_type(*args, **kwargs) == written
    assert required_labels(written) == required


def test_a_bare_type_requires_nothing_and_blanks_are_ignored() -> None:
    assert required_labels("sklearn") == frozenset()
    assert required_labels(" mt:xgboost | |pv:v2 ") == {"mt:xgboost", "pv:v2"}


def test_an_instance_must_carry_every_required_label() -> None:
    required = required_labels("mt:onnx:1|pv:grpc-v2")
    assert satisfies(["mt:onnx:1", "pv:grpc-v2", "rt:triton-2.x"], required)
    assert not satisfies(["mt:onnx:1", "pv:v2"], required)
