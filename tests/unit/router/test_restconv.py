"""V2 REST JSON <-> V2 gRPC messages: every datatype both ways, raw outputs, malformed bodies."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from google.protobuf import json_format

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router import restconv
from mmesh.router.errors import InvalidRequest, RouterError

MNIST_DIGIT = [
    0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0,
    0.0, 8.0, 16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0,
    0.0, 0.0, 2.0, 12.0, 16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0,
    0.0, 0.0, 0.0, 16.0, 16.0, 16.0, 7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0,
]  # fmt: skip

# The tutorial's curl body, and the JSON it hands grpcurl for the same prediction.
TUTORIAL_REST_BODY = (
    '{"inputs": [{ "name": "predict", "shape": [1, 64], "datatype": "FP32", "data": '
    + json.dumps(MNIST_DIGIT)
    + "}]}"
)
TUTORIAL_GRPCURL_JSON = (
    '{ "model_name": "example-sklearn-isvc", "inputs": [{ "name": "predict", "shape": [1, 64], '
    '"datatype": "FP32", "contents": { "fp32_contents": ' + json.dumps(MNIST_DIGIT) + " }}]}"
)


def _request(*inputs: dict[str, object], **extra: object) -> v2.ModelInferRequest:
    return restconv.to_infer_request("m", "", {"inputs": list(inputs), **extra})


def _output_data(response: v2.ModelInferResponse) -> list[object]:
    """The `data` of each output, as a REST client would read it."""
    outputs = restconv.from_infer_response(response)["outputs"]
    assert isinstance(outputs, list)
    return [output["data"] for output in outputs]


def _tensor(datatype: str, shape: list[int], data: object) -> dict[str, object]:
    return {"name": "x", "datatype": datatype, "shape": shape, "data": data}


# --- the tutorial --------------------------------------------------------------------------


def test_tutorial_body_equals_the_grpcurl_request() -> None:
    body = restconv.parse_json_body(TUTORIAL_REST_BODY.encode())
    request = restconv.to_infer_request("example-sklearn-isvc", "", body)
    expected = json_format.Parse(TUTORIAL_GRPCURL_JSON, v2.ModelInferRequest())
    assert request == expected
    assert request.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


def test_tutorial_answer_renders_as_in_the_tutorial() -> None:
    response = v2.ModelInferResponse(
        model_name="example-sklearn-isvc__isvc-3642375d03",
        outputs=[
            v2.ModelInferResponse.InferOutputTensor(
                name="predict",
                datatype="INT64",
                shape=[1],
                contents=v2.InferTensorContents(int64_contents=[8]),
            )
        ],
    )
    assert restconv.from_infer_response(response) == {
        "model_name": "example-sklearn-isvc__isvc-3642375d03",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [8]}],
    }


# --- every datatype, both ways -------------------------------------------------------------

# (datatype, JSON data, contents field, protobuf values)
DATATYPES = [
    ("BOOL", [True, False, True], "bool_contents", [True, False, True]),
    ("INT8", [-128, 0, 127], "int_contents", [-128, 0, 127]),
    ("INT16", [-32768, 1, 32767], "int_contents", [-32768, 1, 32767]),
    ("INT32", [-(2**31), 2, 2**31 - 1], "int_contents", [-(2**31), 2, 2**31 - 1]),
    ("INT64", [-(2**63), 8, 2**63 - 1], "int64_contents", [-(2**63), 8, 2**63 - 1]),
    ("UINT8", [0, 1, 255], "uint_contents", [0, 1, 255]),
    ("UINT16", [0, 1, 65535], "uint_contents", [0, 1, 65535]),
    ("UINT32", [0, 1, 2**32 - 1], "uint_contents", [0, 1, 2**32 - 1]),
    ("UINT64", [0, 1, 2**64 - 1], "uint64_contents", [0, 1, 2**64 - 1]),
    ("FP32", [0.5, -1.25, 3], "fp32_contents", [0.5, -1.25, 3.0]),
    ("FP64", [0.1, -1e300, 7], "fp64_contents", [0.1, -1e300, 7.0]),
    ("BYTES", ["héllo", {"b64": "/wA="}, ""], "bytes_contents",
     ["héllo".encode(), b"\xff\x00", b""]),
]  # fmt: skip

ALL_FIELDS = {field for _, _, field, _ in DATATYPES}


@pytest.mark.parametrize(("datatype", "data", "field", "values"), DATATYPES, ids=lambda v: v)
def test_request_data_goes_to_the_typed_field(datatype, data, field, values) -> None:
    tensor = _request(_tensor(datatype, [3], data)).inputs[0]
    assert tensor.datatype == datatype
    assert list(tensor.shape) == [3]
    assert list(getattr(tensor.contents, field)) == values
    for other in ALL_FIELDS - {field}:
        assert not getattr(tensor.contents, other)


def _typed_response(datatype: str, field: str, values: list[object]) -> v2.ModelInferResponse:
    output = v2.ModelInferResponse.InferOutputTensor(name="y", datatype=datatype, shape=[3])
    getattr(output.contents, field).extend(values)
    return v2.ModelInferResponse(model_name="m", outputs=[output])


@pytest.mark.parametrize(("datatype", "data", "field", "values"), DATATYPES, ids=lambda v: v)
def test_typed_response_renders_json_data(datatype, data, field, values) -> None:
    rendered = restconv.from_infer_response(_typed_response(datatype, field, values))
    assert rendered["outputs"] == [{"name": "y", "datatype": datatype, "shape": [3], "data": data}]


def test_json_round_trip_of_every_datatype_keeps_the_data() -> None:
    for datatype, data, field, _ in DATATYPES:
        contents = _request(_tensor(datatype, [3], data)).inputs[0].contents
        typed = _typed_response(datatype, field, list(getattr(contents, field)))
        assert _output_data(typed) == [data], datatype


# Raw little-endian buffers, as Triton and MLServer send in raw_output_contents.
RAW = [
    ("BOOL", struct.pack("<3?", True, False, True), [True, False, True]),
    ("INT8", struct.pack("<3b", -128, 0, 127), [-128, 0, 127]),
    ("INT16", struct.pack("<3h", -32768, 1, 32767), [-32768, 1, 32767]),
    ("INT32", struct.pack("<3i", -(2**31), 2, 2**31 - 1), [-(2**31), 2, 2**31 - 1]),
    ("INT64", struct.pack("<3q", -(2**63), 8, 2**63 - 1), [-(2**63), 8, 2**63 - 1]),
    ("UINT8", bytes([0, 1, 255]), [0, 1, 255]),
    ("UINT16", struct.pack("<3H", 0, 1, 65535), [0, 1, 65535]),
    ("UINT32", struct.pack("<3I", 0, 1, 2**32 - 1), [0, 1, 2**32 - 1]),
    ("UINT64", struct.pack("<3Q", 0, 1, 2**64 - 1), [0, 1, 2**64 - 1]),
    ("FP32", struct.pack("<3f", 0.1, -2.5, 1e-7), [0.1, -2.5, 1e-7]),
    ("FP64", struct.pack("<3d", 0.1, -2.5, 1e300), [0.1, -2.5, 1e300]),
    ("FP16", struct.pack("<3e", 0.1, -2.5, 6e-8), [0.1, -2.5, 6e-8]),
    ("BF16", bytes.fromhex("803f" "20c0" "0000"), [1.0, -2.5, 0.0]),
    ("BYTES", b"\x02\x00\x00\x00hi" b"\x00\x00\x00\x00" b"\x01\x00\x00\x00\xff",
     ["hi", "", {"b64": base64.b64encode(b"\xff").decode()}]),
]  # fmt: skip


@pytest.mark.parametrize(("datatype", "raw", "data"), RAW, ids=lambda v: v)
def test_raw_output_contents_decode_little_endian(datatype, raw, data) -> None:
    output = v2.ModelInferResponse.InferOutputTensor(name="y", datatype=datatype, shape=[3])
    response = v2.ModelInferResponse(model_name="m", outputs=[output], raw_output_contents=[raw])
    assert _output_data(response) == [data]


def test_raw_contents_are_matched_to_outputs_by_position() -> None:
    response = v2.ModelInferResponse(
        model_name="m",
        outputs=[
            v2.ModelInferResponse.InferOutputTensor(name="a", datatype="INT32", shape=[2]),
            v2.ModelInferResponse.InferOutputTensor(name="b", datatype="BYTES", shape=[1]),
        ],
        raw_output_contents=[struct.pack("<2i", 4, 5), b"\x03\x00\x00\x00abc"],
    )
    assert _output_data(response) == [[4, 5], ["abc"]]


def test_fp32_values_render_with_their_shortest_digits() -> None:
    values = [0.1, 1 / 3, 16777217.0, 3.4028234663852886e38, 1e-45, 0.0, -0.0, float("inf")]
    rendered = restconv.decode_raw("FP32", struct.pack("<8f", *values))
    assert rendered[:4] == [0.1, 0.33333334, 16777216.0, 3.4028235e38]
    assert rendered[4:] == [1e-45, 0.0, -0.0, float("inf")]
    for value, shown in zip(values, rendered, strict=True):
        assert struct.pack("<f", value) == struct.pack("<f", shown)  # lossless


def test_fp16_values_render_with_their_shortest_digits() -> None:
    values = [0.1, 65504.0, 6e-8, 1 / 3]
    rendered = restconv.decode_raw("FP16", struct.pack("<4e", *values))
    assert rendered == [0.1, 65500.0, 6e-8, 0.3333]


@pytest.mark.parametrize(
    ("datatype", "raw", "message"),
    [
        ("INT32", b"\x00" * 7, "7 raw bytes are not a whole number of 4-byte INT32 values"),
        ("BYTES", b"\x05\x00\x00\x00ab", "needs 5 bytes, 2 left"),
        ("BYTES", b"\x01\x00", "end inside a length prefix at offset 0"),
        ("STRING", b"abc", 'cannot decode raw contents of datatype "STRING"'),
    ],
)
def test_malformed_raw_output_is_a_router_error(datatype, raw, message) -> None:
    output = v2.ModelInferResponse.InferOutputTensor(name="y", datatype=datatype, shape=[1])
    response = v2.ModelInferResponse(outputs=[output], raw_output_contents=[raw])
    with pytest.raises(RouterError, match="outputs\\[0\\] \\(y\\)") as info:
        restconv.from_infer_response(response)
    assert message in str(info.value)
    assert not isinstance(info.value, InvalidRequest)  # the runtime's fault, not the client's


def test_raw_contents_must_cover_every_output() -> None:
    outputs = [v2.ModelInferResponse.InferOutputTensor(name=n, datatype="INT8") for n in "ab"]
    response = v2.ModelInferResponse(outputs=outputs, raw_output_contents=[b"\x01"])
    with pytest.raises(RouterError, match="1 raw_output_contents for 2 outputs"):
        restconv.from_infer_response(response)


def test_typed_output_of_an_unknown_datatype_is_a_router_error() -> None:
    output = v2.ModelInferResponse.InferOutputTensor(name="y", datatype="FP16", shape=[1])
    with pytest.raises(RouterError, match='cannot render datatype "FP16" without raw'):
        restconv.from_infer_response(v2.ModelInferResponse(outputs=[output]))


# --- nested data, ids, parameters, requested outputs ---------------------------------------


def test_nested_data_is_flattened_row_major() -> None:
    data = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    tensor = _request(_tensor("INT32", [2, 2, 2], data)).inputs[0]
    assert list(tensor.contents.int_contents) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_nested_bytes_keep_b64_objects_as_elements() -> None:
    tensor = _request(_tensor("BYTES", [2, 1], [["a"], [{"b64": "Yg=="}]])).inputs[0]
    assert list(tensor.contents.bytes_contents) == [b"a", b"b"]


def test_deep_nesting_does_not_recurse() -> None:
    data: list[object] = [7]
    for _ in range(5000):
        data = [data]
    assert list(_request(_tensor("INT8", [1], data)).inputs[0].contents.int_contents) == [7]


def test_empty_tensor_matches_a_zero_dimension() -> None:
    tensor = _request(_tensor("FP32", [0, 3], [])).inputs[0]
    assert list(tensor.shape) == [0, 3]
    assert not tensor.contents.fp32_contents


def test_model_version_id_parameters_and_outputs_are_carried() -> None:
    body = {
        "id": "req-1",
        "parameters": {"flag": True, "n": 3, "big": 2**64 - 1, "ratio": 0.5, "s": "x"},
        "inputs": [{**_tensor("INT8", [1], [1]), "parameters": {"content_type": "np"}}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": False}}, {"name": "p2"}],
    }
    request = restconv.to_infer_request("m", "3", body)
    assert (request.model_name, request.model_version, request.id) == ("m", "3", "req-1")
    assert request.parameters["flag"] == v2.InferParameter(bool_param=True)
    assert request.parameters["n"] == v2.InferParameter(int64_param=3)
    assert request.parameters["big"] == v2.InferParameter(uint64_param=2**64 - 1)
    assert request.parameters["ratio"] == v2.InferParameter(double_param=0.5)
    assert request.parameters["s"] == v2.InferParameter(string_param="x")
    assert request.inputs[0].parameters["content_type"].string_param == "np"
    assert [o.name for o in request.outputs] == ["predict", "p2"]
    assert request.outputs[0].parameters["binary_data"] == v2.InferParameter(bool_param=False)


def test_response_header_fields_are_rendered_when_set() -> None:
    output = v2.ModelInferResponse.InferOutputTensor(
        name="y",
        datatype="INT8",
        shape=[1],
        parameters={"unit": v2.InferParameter(string_param="cm")},
        contents=v2.InferTensorContents(int_contents=[1]),
    )
    response = v2.ModelInferResponse(
        model_name="m",
        model_version="2",
        id="req-1",
        parameters={
            "a": v2.InferParameter(int64_param=-1),
            "b": v2.InferParameter(uint64_param=2**64 - 1),
            "c": v2.InferParameter(double_param=1.5),
            "d": v2.InferParameter(bool_param=False),
            "e": v2.InferParameter(),
        },
        outputs=[output],
    )
    assert restconv.from_infer_response(response) == {
        "model_name": "m",
        "model_version": "2",
        "id": "req-1",
        "parameters": {"a": -1, "b": 2**64 - 1, "c": 1.5, "d": False, "e": None},
        "outputs": [
            {
                "name": "y",
                "datatype": "INT8",
                "shape": [1],
                "parameters": {"unit": "cm"},
                "data": [1],
            }
        ],
    }


# --- malformed bodies ----------------------------------------------------------------------


def _one(**overrides: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "predict", "shape": [1, 64], "datatype": "FP32"}
    tensor["data"] = MNIST_DIGIT
    tensor.update(overrides)
    return {"inputs": [tensor]}


MALFORMED = [
    ("no inputs", {}, "inputs: required"),
    ("inputs not a list", {"inputs": {"name": "x"}}, "inputs: expected a non-empty list"),
    ("inputs empty", {"inputs": []}, "inputs: expected a non-empty list, got []"),
    ("input not an object", {"inputs": [3]}, "inputs[0]: expected an object, got 3"),
    ("no name", {"inputs": [{"shape": [1]}]}, "inputs[0].name: required"),
    ("empty name", _one(name=""), 'inputs[0].name: expected a non-empty string, got ""'),
    ("no shape", _one(shape=None), "inputs[0].shape: required"),
    ("shape not list", _one(shape=64), "inputs[0].shape: expected a list of non-negative"),
    ("negative dim", _one(shape=[-1, 64]), "inputs[0].shape: expected a list of non-negative"),
    ("bool dim", _one(shape=[True, 64]), "inputs[0].shape: expected a list of non-negative"),
    ("huge dim", _one(shape=[2**63]), "inputs[0].shape: expected a list of non-negative"),
    ("no datatype", _one(datatype=None), "inputs[0].datatype: required"),
    ("datatype not str", _one(datatype=1), "inputs[0].datatype: expected a string, got 1"),
    ("FP16", _one(datatype="FP16"), "inputs[0].datatype: FP16 is not supported"),
    ("BF16", _one(datatype="BF16"), "inputs[0].datatype: BF16 is not supported"),
    ("unknown datatype", _one(datatype="FLOAT"), 'inputs[0].datatype: unknown datatype "FLOAT"'),
    ("no data", _one(data=None), "inputs[0].data: required"),
    ("data not a list", _one(data=1.0), "inputs[0].data: expected a list, got 1.0"),
    ("too few values", _one(data=MNIST_DIGIT[:63]),
     "inputs[0].data: expected 64 values for shape [1, 64], got 63"),
    ("too many values", _one(shape=[1, 2], data=[1, 2, 3]),
     "inputs[0].data: expected 2 values for shape [1, 2], got 3"),
    ("string in FP32", _one(shape=[2], data=[1.0, "2"]),
     'inputs[0].data[1]: expected a number, got "2"'),
    ("bool in FP32", _one(shape=[1], data=[True]),
     "inputs[0].data[0]: expected a number, got true"),
    ("FP32 overflow", _one(shape=[1], data=[1e39]),
     "inputs[0].data[0]: 1e+39 is out of range for FP32"),
    ("huge int in FP64", _one(shape=[1], datatype="FP64", data=[10**400]),
     "inputs[0].data[0]: 1000000000000000000000000000000000000... is too large"),
    ("float in INT64", _one(shape=[1], datatype="INT64", data=[1.5]),
     "inputs[0].data[0]: expected an integer, got 1.5"),
    ("bool in INT32", _one(shape=[1], datatype="INT32", data=[False]),
     "inputs[0].data[0]: expected an integer, got false"),
    ("INT8 overflow", _one(shape=[2], datatype="INT8", data=[1, 128]),
     "inputs[0].data[1]: 128 is out of range for INT8"),
    ("UINT8 negative", _one(shape=[1], datatype="UINT8", data=[-1]),
     "inputs[0].data[0]: -1 is out of range for UINT8"),
    ("UINT64 overflow", _one(shape=[1], datatype="UINT64", data=[2**64]),
     "inputs[0].data[0]: 18446744073709551616 is out of range for UINT64"),
    ("int in BOOL", _one(shape=[1], datatype="BOOL", data=[1]),
     "inputs[0].data[0]: expected a boolean, got 1"),
    ("number in BYTES", _one(shape=[1], datatype="BYTES", data=[1]),
     'inputs[0].data[0]: expected a string or {"b64": "..."}, got 1'),
    ("bad base64", _one(shape=[1], datatype="BYTES", data=[{"b64": "*"}]),
     'inputs[0].data[0]: invalid base64 in {"b64": "*"}'),
    ("b64 with extra keys", _one(shape=[1], datatype="BYTES", data=[{"b64": "", "x": 1}]),
     "inputs[0].data[0]: expected a string or"),
    ("lone surrogate", _one(shape=[1], datatype="BYTES", data=["\ud800"]),
     "inputs[0].data[0]: string is not valid UTF-8"),
    ("input parameters", _one(parameters=[1]), "inputs[0].parameters: expected an object, got [1]"),
    ("parameter value", {**_one(), "parameters": {"p": [1]}},
     "parameters.p: expected a boolean, number or string, got [1]"),
    ("parameter too big", {**_one(), "parameters": {"p": 2**64}},
     "parameters.p: 18446744073709551616 does not fit in 64 bits"),
    ("id not a string", {**_one(), "id": 5}, "id: expected a string, got 5"),
    ("outputs not a list", {**_one(), "outputs": {}}, "outputs: expected a list, got {}"),
    ("output without name", {**_one(), "outputs": [{}]}, "outputs[0].name: required"),
    ("output parameters", {**_one(), "outputs": [{"name": "y", "parameters": 1}]},
     "outputs[0].parameters: expected an object, got 1"),
    ("second input", {"inputs": [_one()["inputs"][0], {"name": "b"}]},  # type: ignore[index]
     "inputs[1].shape: required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_body_names_the_field(body, message) -> None:
    with pytest.raises(InvalidRequest) as info:
        restconv.to_infer_request("m", "", body)
    assert str(info.value).startswith(message)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is not valid JSON: Expecting value"),
        (b'{"inputs": [', "request body is not valid JSON"),
        (b"\xff\xfe\x00", "request body is not valid JSON"),
        (b"[1, 2]", "request body: expected a JSON object, got [1, 2]"),
        (b'"text"', 'request body: expected a JSON object, got "text"'),
    ],
)
def test_body_must_be_a_json_object(raw, message) -> None:
    with pytest.raises(InvalidRequest) as info:
        restconv.parse_json_body(raw)
    assert str(info.value).startswith(message)


def test_parse_json_body_accepts_an_object() -> None:
    assert restconv.parse_json_body(b'{"inputs": []}') == {"inputs": []}


# --- metadata and errors -------------------------------------------------------------------


def test_metadata_to_json() -> None:
    tensor = v2.ModelMetadataResponse.TensorMetadata
    response = v2.ModelMetadataResponse(
        name="example-sklearn-isvc__isvc-3642375d03",
        versions=["1"],
        platform="mlserver",
        inputs=[tensor(name="predict", datatype="FP32", shape=[-1, 64])],
        outputs=[tensor(name="predict", datatype="INT64", shape=[-1])],
    )
    assert restconv.metadata_to_json(response) == {
        "name": "example-sklearn-isvc__isvc-3642375d03",
        "versions": ["1"],
        "platform": "mlserver",
        "inputs": [{"name": "predict", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }


def test_metadata_to_json_of_an_empty_answer() -> None:
    assert restconv.metadata_to_json(v2.ModelMetadataResponse()) == {
        "name": "",
        "versions": [],
        "platform": "",
        "inputs": [],
        "outputs": [],
    }


def test_error_body() -> None:
    assert restconv.error_body("model not found") == {"error": "model not found"}
