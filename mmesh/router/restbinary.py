"""The binary tensor data extension of V2 REST (Triton's, the default of tritonclient HTTP).

A request with the `Inference-Header-Content-Length: N` header is N bytes of JSON followed by
the raw bytes of the inputs whose `parameters.binary_data_size` says how many are theirs, in
input order. Those become `raw_input_contents` of the gRPC request (all inputs then travel
raw, as the gRPC protocol asks). In the answer, outputs asked for in binary (their own
`parameters.binary_data`, else the request's `parameters.binary_data_output`) carry
`binary_data_size` instead of `data` and their bytes follow the JSON, whose length is in the
same header. No I/O: values to values; `InvalidRequest` names what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from mmesh.core.numbers import whole_number
from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router import restconv
from mmesh.router.errors import InvalidRequest, RouterError

HEADER = "Inference-Header-Content-Length"
SIZE_PARAM = "binary_data_size"

JsonObject = Mapping[str, object]

_RAW_CODES = {
    "BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B",
    "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d",
}  # fmt: skip
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_PLACEHOLDER: Mapping[str, object] = {"BOOL": False, "BYTES": ""}


def split_body(body: bytes, header_value: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body."""
    if header_value is None:
        return body, b""
    text = header_value.strip()
    size = whole_number(text)
    if size is None or size > len(body):
        raise InvalidRequest(
            f"{HEADER} must be a byte count within the {len(body)}-byte body, got {text!r}"
        )
    return body[:size], body[size:]


def _inputs(doc: JsonObject) -> list[Any]:
    inputs = doc.get("inputs")
    return inputs if isinstance(inputs, list) else []


def _binary_size(tensor: object, where: str) -> int | None:
    if not isinstance(tensor, Mapping):
        return None
    params = tensor.get("parameters")
    if not isinstance(params, Mapping) or SIZE_PARAM not in params:
        return None
    size = params[SIZE_PARAM]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequest(f"{where}.parameters.{SIZE_PARAM}: expected a byte count")
    return size


def to_infer_request(
    model_name: str, model_version: str, doc: JsonObject, binary: bytes
) -> v2.ModelInferRequest:
    """`restconv.to_infer_request`, with the inputs' binary data taken from `binary`."""
    inputs = _inputs(doc)
    sizes = [_binary_size(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    if all(size is None for size in sizes):
        if binary:
            raise InvalidRequest(f"{len(binary)} bytes follow the JSON but no input claims them")
        return restconv.to_infer_request(model_name, model_version, doc)
    stand_ins = [
        _stand_in(tensor) if size is not None else tensor
        for tensor, size in zip(inputs, sizes, strict=True)
    ]
    request = restconv.to_infer_request(model_name, model_version, {**doc, "inputs": stand_ins})
    offset = 0
    for index, (tensor, size) in enumerate(zip(request.inputs, sizes, strict=True)):
        where = f"inputs[{index}] ({tensor.name})"
        if size is None:
            raw = _pack(tensor.datatype, getattr(tensor.contents, _CONTENTS[tensor.datatype]))
        else:
            if offset + size > len(binary):
                raise InvalidRequest(
                    f"{where}: {SIZE_PARAM} {size} runs past the {len(binary)} binary bytes"
                )
            raw = binary[offset : offset + size]
            offset += size
            _check_raw(tensor, raw, where)
        tensor.ClearField("contents")
        request.raw_input_contents.append(raw)
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} binary bytes are claimed by no input")
    return request


def _stand_in(tensor: Mapping[str, Any]) -> dict[str, Any]:
    """The tensor with placeholder `data`, so restconv checks name, shape and datatype."""
    params = {k: v for k, v in (tensor.get("parameters") or {}).items() if k != SIZE_PARAM}
    shape = tensor.get("shape")
    count = math.prod(shape) if isinstance(shape, list) and all(
        isinstance(d, int) and d >= 0 for d in shape
    ) else 0  # fmt: skip
    fill = _PLACEHOLDER.get(str(tensor.get("datatype")), 0)
    out = {**tensor, "data": [fill] * count}
    if params:
        out["parameters"] = params
    else:
        out.pop("parameters", None)
    return out


def _check_raw(tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes, where: str) -> None:
    code = _RAW_CODES.get(tensor.datatype)
    if code is None:
        return  # BYTES: element lengths are inside the data
    expected = math.prod(tensor.shape) * struct.calcsize("<" + code)
    if len(raw) != expected:
        raise InvalidRequest(
            f"{where}: {len(raw)} binary bytes for shape {list(tensor.shape)} of "
            f"{tensor.datatype}; expected {expected}"
        )


def _pack(datatype: str, values: Sequence[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + bytes(v) for v in values)
    return struct.pack(f"<{len(values)}{_RAW_CODES[datatype]}", *values)


def _binary_wanted(doc: JsonObject) -> tuple[bool, dict[str, bool]]:
    """(the request's default, per-output choices) for binary output data."""
    params = doc.get("parameters")
    default = bool(isinstance(params, Mapping) and params.get("binary_data_output") is True)
    chosen: dict[str, bool] = {}
    outputs = doc.get("outputs")
    for wanted in outputs if isinstance(outputs, list) else []:
        if isinstance(wanted, Mapping) and isinstance(wanted.get("name"), str):
            wanted_params = wanted.get("parameters")
            if isinstance(wanted_params, Mapping) and "binary_data" in wanted_params:
                chosen[wanted["name"]] = wanted_params["binary_data"] is True
    return default, chosen


def render_response(resp: v2.ModelInferResponse, doc: JsonObject) -> tuple[bytes, int | None]:
    """The answer body, and the JSON length for the header when binary data follows it."""
    answer = restconv.from_infer_response(resp)
    default, chosen = _binary_wanted(doc)
    raw = resp.raw_output_contents
    tails: list[bytes] = []
    outputs = answer["outputs"]
    assert isinstance(outputs, list)
    for index, (tensor, out) in enumerate(zip(resp.outputs, outputs, strict=True)):
        if not chosen.get(tensor.name, default):
            continue
        if raw:
            data = raw[index]
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise RouterError(f"outputs[{index}] ({tensor.name}): no binary form for "
                                  f"{tensor.datatype} without raw contents")  # fmt: skip
            data = _pack(tensor.datatype, getattr(tensor.contents, field))
        del out["data"]
        out["parameters"] = {**out.get("parameters", {}), SIZE_PARAM: len(data)}
        tails.append(data)
    head = json.dumps(answer).encode()
    if not tails:
        return head, None
    return head + b"".join(tails), len(head)
