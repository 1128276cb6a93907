"""V2 REST binary tensor data (tritonclient HTTP's default): request bodies with raw input
bytes after the JSON, answers with raw output bytes after the JSON."""

from __future__ import annotations

import json
import struct

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router.errors import InvalidRequest
from mmesh.router.restbinary import render_response, split_body, to_infer_request


def body_of(doc: dict[str, object], *tails: bytes) -> tuple[bytes, str]:
    head = json.dumps(doc).encode()
    return head + b"".join(tails), str(len(head))


def test_binary_inputs_become_raw_input_contents() -> None:
    floats = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    doc = {
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32",
             "parameters": {"binary_data_size": 16}},
            {"name": "k", "shape": [1], "datatype": "INT64", "data": [7]},
        ],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    raw, header = body_of(doc, floats)
    head, binary = split_body(raw, header)
    request = to_infer_request("m", "", json.loads(head), binary)
    assert [t.name for t in request.inputs] == ["x", "k"]
    assert list(request.inputs[0].shape) == [2, 2]
    assert "binary_data_size" not in request.inputs[0].parameters
    # All inputs travel raw once one does (the gRPC protocol's rule); no typed contents left.
    assert list(request.raw_input_contents) == [floats, struct.pack("<q", 7)]
    assert not request.inputs[1].HasField("contents")


def test_without_the_header_the_body_is_plain_json() -> None:
    doc = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]}
    head, binary = split_body(json.dumps(doc).encode(), None)
    request = to_infer_request("m", "", json.loads(head), binary)
    assert list(request.inputs[0].contents.fp32_contents) == [1.5]
    assert not request.raw_input_contents


@pytest.mark.parametrize(
    ("size", "tail", "message"),
    [
        (16, b"\x00" * 8, "binary_data_size 16 runs past the 8 binary bytes"),
        (8, b"\x00" * 8, "8 binary bytes for shape [2, 2] of FP32; expected 16"),
        (16, b"\x00" * 20, "4 binary bytes are claimed by no input"),
    ],
)
def test_sizes_that_do_not_add_up_are_invalid(size: int, tail: bytes, message: str) -> None:
    doc = {
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32",
             "parameters": {"binary_data_size": size}},
        ]
    }  # fmt: skip
    raw, header = body_of(doc, tail)
    head, binary = split_body(raw, header)
    with pytest.raises(InvalidRequest) as err:
        to_infer_request("m", "", json.loads(head), binary)
    assert message in str(err.value)


@pytest.mark.parametrize("header", ["99", "-1", "²", "x"])
def test_a_bad_header_is_invalid(header: str) -> None:
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
        split_body(b"{}", header)


def answer() -> v2.ModelInferResponse:
    resp = v2.ModelInferResponse(model_name="m")
    out = resp.outputs.add(name="predict", datatype="INT64", shape=[1, 1])
    out.contents.int64_contents.append(8)
    resp.outputs.add(name="proba", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
        [0.25, 0.75]
    )
    return resp


def test_outputs_asked_for_in_binary_follow_the_json() -> None:
    doc = {"inputs": [], "parameters": {"binary_data_output": True},
           "outputs": [{"name": "proba", "parameters": {"binary_data": False}}]}  # fmt: skip
    content, json_length = render_response(answer(), doc)
    assert json_length is not None
    head = json.loads(content[:json_length])
    predict, proba = head["outputs"]
    assert predict["parameters"] == {"binary_data_size": 8} and "data" not in predict
    assert proba["data"] == [0.25, 0.75]
    assert content[json_length:] == struct.pack("<q", 8)


def test_plain_json_answers_by_default() -> None:
    content, json_length = render_response(answer(), {"inputs": []})
    assert json_length is None
    assert json.loads(content)["outputs"][0]["data"] == [8]


def test_raw_runtime_output_is_passed_through() -> None:
    resp = v2.ModelInferResponse(model_name="m")
    resp.outputs.add(name="y", datatype="FP32", shape=[2])
    resp.raw_output_contents.append(struct.pack("<2f", 1.0, 2.0))
    content, json_length = render_response(resp, {"parameters": {"binary_data_output": True}})
    assert json_length is not None
    assert content[json_length:] == struct.pack("<2f", 1.0, 2.0)
