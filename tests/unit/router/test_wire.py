"""Reading and rewriting one string field in raw protobuf bytes (mmesh.router.wire)."""

from __future__ import annotations

import tracemalloc

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.router.errors import InvalidRequest
from mmesh.router.wire import read_string_field, replace_string_field

MODEL_NAME = (1,)
MIB = 1 << 20


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _request(name: str = "mnist-svm", payload_bytes: int = MIB) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=name, model_version="1", id="req-1")
    tensor = req.inputs.add(name="input-0", datatype="FP32", shape=[1, payload_bytes // 4])
    tensor.parameters["content_type"].string_param = "np"
    req.outputs.add(name="predict")
    req.parameters["headers"].bool_param = True
    req.raw_input_contents.append(b"\x5a" * payload_bytes)
    return req


# Unknown fields of every wire type: varint, 64-bit, length-delimited, 32-bit.
UNKNOWN = (
    _varint(99 << 3 | 0) + _varint(300)
    + _varint(100 << 3 | 1) + b"\x01" * 8
    + _len_field(101, b"opaque")
    + _varint(102 << 3 | 5) + b"\x02" * 4
)  # fmt: skip


@pytest.fixture(scope="module")
def big() -> bytes:
    return _request().SerializeToString()


# ---------------------------------------------------------------- reading


def test_reads_model_name_of_a_real_request(big: bytes) -> None:
    assert read_string_field(big, MODEL_NAME) == "mnist-svm"


def test_reads_from_a_memoryview(big: bytes) -> None:
    assert read_string_field(memoryview(big), MODEL_NAME) == "mnist-svm"
    assert read_string_field(memoryview(bytearray(big)), MODEL_NAME) == "mnist-svm"


def test_reads_from_a_memoryview_of_another_format() -> None:
    data = v2.ModelInferRequest(model_name="abcdef").SerializeToString()
    assert len(data) == 8
    assert read_string_field(memoryview(data).cast("I"), MODEL_NAME) == "abcdef"


def test_reads_other_string_fields(big: bytes) -> None:
    assert read_string_field(big, (2,)) == "1"
    assert read_string_field(big, (3,)) == "req-1"


def test_reading_a_1mib_request_copies_nothing(big: bytes) -> None:
    view = memoryview(big)
    tracemalloc.start()
    try:
        read_string_field(view, MODEL_NAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024


def test_empty_message_has_no_field() -> None:
    assert read_string_field(b"", MODEL_NAME) is None


def test_absent_field_is_none() -> None:
    assert read_string_field(v2.ModelInferRequest(id="x").SerializeToString(), MODEL_NAME) is None


def test_present_empty_string_is_empty() -> None:
    assert read_string_field(_len_field(1, b""), MODEL_NAME) == ""


def test_last_occurrence_wins() -> None:
    data = (
        v2.ModelInferRequest(model_name="first").SerializeToString()
        + _request("second", 16).SerializeToString()
        + v2.ModelInferRequest(id="no-name").SerializeToString()
    )
    assert v2.ModelInferRequest.FromString(data).model_name == "second"
    assert read_string_field(data, MODEL_NAME) == "second"


def test_unknown_fields_are_skipped() -> None:
    data = UNKNOWN + _len_field(1, b"m") + UNKNOWN
    assert read_string_field(data, MODEL_NAME) == "m"


def test_reads_a_nested_field_of_a_real_message() -> None:
    req = mm.RegisterModelRequest(
        modelId="m1", modelInfo=mm.ModelInfo(type="sklearn", path="s3://b/m1", key="k"),
        loadNow=True,
    )  # fmt: skip
    data = req.SerializeToString()
    assert read_string_field(data, (2, 1)) == "sklearn"
    assert read_string_field(data, (2, 2)) == "s3://b/m1"
    assert read_string_field(data, (1,)) == "m1"


def test_nested_occurrences_merge() -> None:
    # outer field 3 twice: the later one lacks field 2, so the earlier field 2 survives the merge
    data = _len_field(3, _len_field(2, b"a") + _len_field(4, b"x")) + _len_field(3, b"")
    assert read_string_field(data, (3, 2)) == "a"
    data += _len_field(3, _len_field(2, b"b"))
    assert read_string_field(data, (3, 2)) == "b"
    assert read_string_field(data, (3, 9)) is None
    assert read_string_field(data, (5, 2)) is None


def test_reads_three_levels_deep() -> None:
    data = _len_field(1, b"top") + _len_field(2, _len_field(7, _len_field(3, b"deep")))
    assert read_string_field(data, (2, 7, 3)) == "deep"


def test_non_ascii_value() -> None:
    data = v2.ModelInferRequest(model_name="modèle-✓").SerializeToString()
    assert read_string_field(data, MODEL_NAME) == "modèle-✓"


@pytest.mark.parametrize("path", [(), (0,), (1, -1), (2**29,)], ids=repr)
def test_invalid_path_is_a_programming_error(path: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="field"):
        read_string_field(b"", path)


# ---------------------------------------------------------------- malformed input

MALFORMED = {
    "truncated key varint": b"\x80",
    "truncated length varint": b"\x0a\x80",
    "length past the end": b"\x0a\x05ab",
    "varint value truncated": b"\x18\xff",
    "varint over 10 bytes": b"\x18" + b"\xff" * 10 + b"\x01",
    "fixed64 truncated": b"\x19\x00\x00",
    "fixed32 truncated": b"\x1d\x00",
    "group start": b"\x1b",
    "group end": b"\x1c",
    "wire type 6": b"\x1e\x00",
    "wire type 7": b"\x1f\x00",
    "field number 0": b"\x02\x00",
    "invalid utf-8": b"\x0a\x02\xff\xfe",
    "model_name as varint": b"\x08\x01",
    "model_name as fixed32": b"\x0d\x00\x00\x00\x00",
    "garbage after a good field": b"\x0a\x01m\x07",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest, match=r"^malformed request: "):
        read_string_field(data, MODEL_NAME)
    with pytest.raises(InvalidRequest, match=r"^malformed request: "):
        replace_string_field(data, MODEL_NAME, "other")


@pytest.mark.parametrize("cut", [1, 40, MIB // 2, -1])
def test_truncated_real_request_is_an_invalid_request(big: bytes, cut: int) -> None:
    with pytest.raises(InvalidRequest):
        read_string_field(big[:cut], MODEL_NAME)


@pytest.mark.parametrize(
    "data",
    [
        _len_field(3, b"\x80"),  # truncated varint inside the outer message
        _len_field(3, b"\x12\x05ab"),  # inner length past the inner end
        _len_field(3, b"\x12\x02\xc3\x28"),  # invalid utf-8 inside
        _varint(3 << 3 | 0) + b"\x01",  # the outer field is not a message
    ],
    ids=["truncated", "inner overrun", "utf-8", "outer varint"],
)
def test_malformed_nested_input_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        read_string_field(data, (3, 2))


def test_inner_length_cannot_escape_its_message() -> None:
    # field 3 declares 2 bytes, the inner field claims 3: reading must not run into field 4
    data = _len_field(3, b"\x12\x03") + b"abc"
    with pytest.raises(InvalidRequest):
        read_string_field(data, (3, 2))


# ---------------------------------------------------------------- rewriting


def test_replace_round_trips_a_1mib_request(big: bytes) -> None:
    out = replace_string_field(big, MODEL_NAME, "mnist-svm__isvc-0123456789")
    expected = _request()
    expected.model_name = "mnist-svm__isvc-0123456789"
    assert v2.ModelInferRequest.FromString(out) == expected
    assert read_string_field(out, MODEL_NAME) == "mnist-svm__isvc-0123456789"
    assert len(out) == len(big) + len("__isvc-0123456789")


def test_replace_copies_a_1mib_request_once(big: bytes) -> None:
    tracemalloc.start()
    try:
        out = replace_string_field(big, MODEL_NAME, "mnist-svm__isvc-0123456789")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) <= peak < len(out) + 64 * 1024


def test_replace_with_the_same_value_returns_the_input(big: bytes) -> None:
    assert replace_string_field(big, MODEL_NAME, "mnist-svm") is big


def test_replace_adds_an_absent_field_in_field_order() -> None:
    req = v2.ModelInferRequest(model_version="2", id="r")
    out = replace_string_field(req.SerializeToString(), MODEL_NAME, "m")
    req.model_name = "m"
    assert out == req.SerializeToString()  # canonical order: field 1 first


def test_replace_in_an_empty_message() -> None:
    out = replace_string_field(b"", MODEL_NAME, "m")
    assert v2.ModelInferRequest.FromString(out).model_name == "m"


def test_replace_drops_earlier_occurrences() -> None:
    data = (
        _len_field(1, b"old-a") + _len_field(3, b"id") + _len_field(1, b"old-b") + UNKNOWN
        + _len_field(1, b"old-c")
    )  # fmt: skip
    out = replace_string_field(data, MODEL_NAME, "new")
    assert out == _len_field(1, b"new") + _len_field(3, b"id") + UNKNOWN
    assert v2.ModelInferRequest.FromString(out).model_name == "new"


def test_replace_keeps_unknown_fields() -> None:
    known = _request("m", 64).SerializeToString()
    data = known + UNKNOWN
    out = replace_string_field(data, MODEL_NAME, "renamed")
    assert UNKNOWN in out
    parsed = v2.ModelInferRequest.FromString(out)
    assert parsed.model_name == "renamed"
    assert UNKNOWN in parsed.SerializeToString()  # protobuf kept them as unknown fields


def test_replace_with_a_longer_name_grows_a_multibyte_length() -> None:
    data = _request("m", 16).SerializeToString()
    name = "n" * 300  # the length prefix becomes two bytes
    out = replace_string_field(data, MODEL_NAME, name)
    assert v2.ModelInferRequest.FromString(out).model_name == name


def test_replace_accepts_a_bytearray_source() -> None:
    out = replace_string_field(bytes(bytearray(_len_field(1, b"a"))), MODEL_NAME, "b")
    assert out == _len_field(1, b"b")
    assert isinstance(out, bytes)


def test_replace_a_nested_field_of_a_real_message() -> None:
    req = mm.RegisterModelRequest(
        modelId="m1", modelInfo=mm.ModelInfo(type="sklearn", path="p", key="k"), loadNow=True
    )
    out = replace_string_field(req.SerializeToString(), (2, 2), "s3://bucket/a/much/longer/path")
    req.modelInfo.path = "s3://bucket/a/much/longer/path"
    assert mm.RegisterModelRequest.FromString(out) == req


def test_replace_a_nested_field_rewrites_every_enclosing_length() -> None:
    inner = _len_field(7, _len_field(3, b"deep") + _len_field(4, b"keep"))
    data = _len_field(1, b"top") + _len_field(2, inner) + _len_field(5, b"tail")
    out = replace_string_field(data, (2, 7, 3), "much-deeper-" * 20)
    assert read_string_field(out, (2, 7, 3)) == "much-deeper-" * 20
    assert read_string_field(out, (2, 7, 4)) == "keep"
    assert read_string_field(out, (1,)) == "top"
    assert read_string_field(out, (5,)) == "tail"


def test_replace_a_nested_field_in_the_last_outer_occurrence() -> None:
    data = _len_field(3, _len_field(2, b"a") + _len_field(4, b"x")) + _len_field(3, b"")
    out = replace_string_field(data, (3, 2), "b")
    assert out == _len_field(3, _len_field(2, b"a") + _len_field(4, b"x")) + _len_field(
        3, _len_field(2, b"b")
    )
    assert read_string_field(out, (3, 2)) == "b"
    assert read_string_field(out, (3, 4)) == "x"


def test_replace_creates_missing_enclosing_messages() -> None:
    data = _len_field(1, b"top") + _len_field(5, b"tail")
    out = replace_string_field(data, (3, 2), "v")
    nested = _len_field(3, _len_field(2, b"v"))
    assert out == _len_field(1, b"top") + nested + _len_field(5, b"tail")


def test_replace_then_read_is_consistent_for_many_names() -> None:
    data = _request("m", 256).SerializeToString()
    for name in ["", "a", "ü" * 70, "x" * 20_000]:
        out = replace_string_field(data, MODEL_NAME, name)
        assert read_string_field(out, MODEL_NAME) == name
        assert v2.ModelInferRequest.FromString(out).model_name == name
