"""Converts KServe V2 (Open Inference Protocol) REST JSON to and from the V2 gRPC messages.

No I/O, no clock, no coroutines: every function maps values to values and raises
`InvalidRequest` (naming the offending field) for a malformed body, or `RouterError` for a
runtime response that cannot be rendered. `rest.py` calls it on each request; the result is
handed to the router's own gRPC inference path, so REST and gRPC clients see one behaviour.

Not marked pure for the architecture test only because it builds the generated V2 messages
(`mmesh.core.proto`), which that test keeps out of pure modules.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.internal.containers import MessageMap

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router.errors import InvalidRequest, RouterError

JsonObject = Mapping[str, object]

_FLT_MAX = 3.4028234663852886e38
_UNSUPPORTED_INPUT_TYPES = frozenset({"FP16", "BF16"})


class _BadElement(Exception):
    """One tensor element failed its datatype check; the caller adds where it sits."""


# --- element checks (JSON value -> protobuf value) ---------------------------------------


def _show(value: object) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _BadElement(f"expected a boolean, got {_show(value)}")


def _int_check(datatype: str, low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _BadElement(f"expected an integer, got {_show(value)}")
        if not low <= value <= high:
            raise _BadElement(f"{value} is out of range for {datatype}")
        return value

    return check


def _as_number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _BadElement(f"expected a number, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:
        raise _BadElement(f"{_show(value)} is too large for a floating-point number") from None


def _as_fp32(value: object) -> float:
    number = _as_number(value)
    # FP32 fields would silently turn an overflow into infinity; a client wants to know.
    if math.isfinite(number) and abs(number) > _FLT_MAX:
        raise _BadElement(f"{_show(value)} is out of range for FP32")
    return number


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadElement("string is not valid UTF-8 (lone surrogate)") from None
    if isinstance(value, Mapping) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise _BadElement(f"invalid base64 in {_show(value)}") from None
    raise _BadElement(f'expected a string or {{"b64": "..."}}, got {_show(value)}')


@dataclass(frozen=True, slots=True)
class _Datatype:
    """How one V2 datatype travels: its typed contents field, JSON check and raw layout."""

    contents_field: str
    check: Callable[[object], Any]
    raw_format: str  # struct code of one little-endian element; "" for BYTES


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

_DATATYPES: Mapping[str, _Datatype] = {
    "BOOL": _Datatype("bool_contents", _as_bool, "?"),
    "INT8": _Datatype("int_contents", _int_check("INT8", -128, 127), "b"),
    "INT16": _Datatype("int_contents", _int_check("INT16", -32768, 32767), "h"),
    "INT32": _Datatype("int_contents", _int_check("INT32", -_INT32_MAX - 1, _INT32_MAX), "i"),
    "INT64": _Datatype("int64_contents", _int_check("INT64", -_INT64_MAX - 1, _INT64_MAX), "q"),
    "UINT8": _Datatype("uint_contents", _int_check("UINT8", 0, 255), "B"),
    "UINT16": _Datatype("uint_contents", _int_check("UINT16", 0, 65535), "H"),
    "UINT32": _Datatype("uint_contents", _int_check("UINT32", 0, 2**32 - 1), "I"),
    "UINT64": _Datatype("uint64_contents", _int_check("UINT64", 0, 2**64 - 1), "Q"),
    "FP32": _Datatype("fp32_contents", _as_fp32, "f"),
    "FP64": _Datatype("fp64_contents", _as_number, "d"),
    "BYTES": _Datatype("bytes_contents", _as_bytes, ""),
}


# --- request: JSON -> ModelInferRequest --------------------------------------------------


def parse_json_body(raw: bytes) -> JsonObject:
    """The request body as a JSON object; anything else is an `InvalidRequest`."""
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body: expected a JSON object, got {_show(body)}")
    return body


def to_infer_request(model_name: str, model_version: str, body: JsonObject) -> v2.ModelInferRequest:
    """The ModelInferRequest a gRPC client would send for this V2 REST infer body.

    Tensor `data` may be flat or nested; nested lists are flattened row-major and the
    element count must equal the product of `shape`. Values go to the typed contents field
    of their datatype (INT8/16/32 share `int_contents`, UINT8/16/32 `uint_contents`).
    """
    request = v2.ModelInferRequest(model_name=model_name, model_version=model_version)
    request_id = body.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise InvalidRequest(f"id: expected a string, got {_show(request_id)}")
        request.id = request_id
    _fill_parameters(request.parameters, body.get("parameters"), "parameters")
    inputs = body.get("inputs")
    if inputs is None:
        raise InvalidRequest("inputs: required")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(f"inputs: expected a non-empty list, got {_show(inputs)}")
    for index, tensor in enumerate(inputs):
        _fill_input(request.inputs.add(), tensor, f"inputs[{index}]")
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidRequest(f"outputs: expected a list, got {_show(outputs)}")
        for index, wanted in enumerate(outputs):
            _fill_output(request.outputs.add(), wanted, f"outputs[{index}]")
    return request


def _object(value: object, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected an object, got {_show(value)}")
    return value


def _required(obj: JsonObject, key: str, where: str) -> object:
    if key not in obj or obj[key] is None:
        raise InvalidRequest(f"{where}.{key}: required")
    return obj[key]


def _name(obj: JsonObject, where: str) -> str:
    name = _required(obj, "name", where)
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.name: expected a non-empty string, got {_show(name)}")
    return name


def _fill_input(tensor: v2.ModelInferRequest.InferInputTensor, raw: object, where: str) -> None:
    obj = _object(raw, where)
    tensor.name = _name(obj, where)
    shape = _shape(_required(obj, "shape", where), f"{where}.shape")
    datatype = _datatype(_required(obj, "datatype", where), f"{where}.datatype")
    flat = _flatten(_required(obj, "data", where), f"{where}.data")
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InvalidRequest(
            f"{where}.data: expected {expected} values for shape {shape}, got {len(flat)}"
        )
    tensor.datatype = datatype
    tensor.shape.extend(shape)
    _fill_parameters(tensor.parameters, obj.get("parameters"), f"{where}.parameters")
    spec = _DATATYPES[datatype]
    values = _checked(flat, spec.check, f"{where}.data")
    getattr(tensor.contents, spec.contents_field).extend(values)


def _fill_output(
    wanted: v2.ModelInferRequest.InferRequestedOutputTensor, raw: object, where: str
) -> None:
    obj = _object(raw, where)
    wanted.name = _name(obj, where)
    _fill_parameters(wanted.parameters, obj.get("parameters"), f"{where}.parameters")


def _shape(raw: object, where: str) -> list[int]:
    if not isinstance(raw, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim <= _INT64_MAX for dim in raw
    ):
        raise InvalidRequest(f"{where}: expected a list of non-negative integers, got {_show(raw)}")
    return list(raw)


def _datatype(raw: object, where: str) -> str:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{where}: expected a string, got {_show(raw)}")
    if raw in _UNSUPPORTED_INPUT_TYPES:
        raise InvalidRequest(f"{where}: {raw} is not supported; send FP32 or FP64")
    if raw not in _DATATYPES:
        raise InvalidRequest(f"{where}: unknown datatype {_show(raw)}")
    return raw


def _flatten(raw: object, where: str) -> list[object]:
    """Leaves of nested lists in row-major order (iterative: deep nesting cannot overflow)."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"{where}: expected a list, got {_show(raw)}")
    flat: list[object] = []
    stack: list[Iterator[object]] = [iter(raw)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _checked(flat: Sequence[object], check: Callable[[object], Any], where: str) -> list[Any]:
    values = []
    for index, value in enumerate(flat):
        try:
            values.append(check(value))
        except _BadElement as exc:
            raise InvalidRequest(f"{where}[{index}]: {exc}") from None
    return values


def _fill_parameters(target: MessageMap[str, v2.InferParameter], raw: object, where: str) -> None:
    """Copies a JSON `parameters` object into a protobuf map of InferParameter."""
    if raw is None:
        return
    for key, value in _object(raw, where).items():
        target[key].CopyFrom(_parameter(value, f"{where}.{key}"))


def _parameter(value: object, where: str) -> v2.InferParameter:
    if isinstance(value, bool):
        return v2.InferParameter(bool_param=value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return v2.InferParameter(int64_param=value)
        if 0 <= value < 2**64:
            return v2.InferParameter(uint64_param=value)
        raise InvalidRequest(f"{where}: {value} does not fit in 64 bits")
    if isinstance(value, float):
        return v2.InferParameter(double_param=value)
    if isinstance(value, str):
        return v2.InferParameter(string_param=value)
    raise InvalidRequest(f"{where}: expected a boolean, number or string, got {_show(value)}")


# --- response: ModelInferResponse -> JSON ------------------------------------------------


def from_infer_response(resp: v2.ModelInferResponse) -> dict[str, object]:
    """The V2 REST infer answer for a ModelInferResponse.

    Empty `model_version`, `id` and `parameters` are left out (as the REST proxy does).
    Output data is flat, read from `raw_output_contents[i]` when the runtime sent raw
    contents, else from the typed contents field of the output's datatype.
    """
    raw = resp.raw_output_contents
    if raw and len(raw) != len(resp.outputs):
        raise RouterError(
            f"runtime response has {len(raw)} raw_output_contents for {len(resp.outputs)} outputs"
        )
    body: dict[str, object] = {"model_name": resp.model_name}
    if resp.model_version:
        body["model_version"] = resp.model_version
    if resp.id:
        body["id"] = resp.id
    if resp.parameters:
        body["parameters"] = _parameters_json(resp.parameters)
    body["outputs"] = [
        _output_json(tensor, raw[index] if raw else None, f"outputs[{index}] ({tensor.name})")
        for index, tensor in enumerate(resp.outputs)
    ]
    return body


def _output_json(
    tensor: v2.ModelInferResponse.InferOutputTensor, raw: bytes | None, where: str
) -> dict[str, object]:
    out: dict[str, object] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": [int(dim) for dim in tensor.shape],
    }
    if tensor.parameters:
        out["parameters"] = _parameters_json(tensor.parameters)
    if raw is not None:
        out["data"] = decode_raw(tensor.datatype, raw, where)
    else:
        out["data"] = _typed_data(tensor.datatype, tensor.contents, where)
    return out


def _typed_data(datatype: str, contents: v2.InferTensorContents, where: str) -> list[object]:
    spec = _DATATYPES.get(datatype)
    if spec is None:
        raise RouterError(f"{where}: cannot render datatype {_show(datatype)} without raw contents")
    values = list(getattr(contents, spec.contents_field))
    if datatype == "FP32":
        return _shortest_fp32(values)
    if datatype == "BYTES":
        return [_bytes_json(value) for value in values]
    return values


_RAW_EXTRA_FORMATS = {"FP16": "e"}


def decode_raw(datatype: str, raw: bytes, where: str = "raw contents") -> list[object]:
    """Elements of a raw little-endian tensor buffer, as JSON values.

    BYTES elements are 4-byte little-endian length prefixes each followed by that many
    bytes; BF16 is the upper half of an FP32.
    """
    if datatype == "BYTES":
        return [_bytes_json(item) for item in _split_bytes(raw, where)]
    if datatype == "BF16":
        halves = _unpack("H", raw, datatype, where)
        widened = struct.pack(f"<{len(halves)}I", *(int(h) << 16 for h in halves))
        return list(struct.unpack(f"<{len(halves)}f", widened))
    spec = _DATATYPES.get(datatype)
    code = spec.raw_format if spec else _RAW_EXTRA_FORMATS.get(datatype, "")
    if not code:
        raise RouterError(f"{where}: cannot decode raw contents of datatype {_show(datatype)}")
    values = _unpack(code, raw, datatype, where)
    if code == "f":
        return _shortest_fp32(values)
    if code == "e":
        return [_shortest(value, code) for value in values]
    return values


def _unpack(code: str, raw: bytes, datatype: str, where: str) -> list[Any]:
    size = struct.calcsize("<" + code)
    if len(raw) % size:
        raise RouterError(
            f"{where}: {len(raw)} raw bytes are not a whole number of {size}-byte {datatype} values"
        )
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


def _split_bytes(raw: bytes, where: str) -> list[bytes]:
    items = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RouterError(f"{where}: raw BYTES end inside a length prefix at offset {offset}")
        (length,) = struct.unpack_from("<I", raw, offset)
        start = offset + 4
        if start + length > len(raw):
            raise RouterError(
                f"{where}: raw BYTES element at offset {offset} needs {length} bytes, "
                f"{len(raw) - start} left"
            )
        items.append(raw[start : start + length])
        offset = start + length
    return items


def _bytes_json(value: bytes) -> object:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


@dataclass(frozen=True, slots=True)
class _Float:
    """Search bounds for the shortest decimal of one float format."""

    min_normal: float
    first_digits: int  # a normal value never rounds to fewer digits than it takes to tell apart
    max_digits: int  # always enough to round-trip


# A normal value's precision is finer than a decimal step at `first_digits`, so the first
# precision from there that round-trips is also the shortest; subnormals search from 1.
_FLOATS = {"f": _Float(1.1754943508222875e-38, 6, 9), "e": _Float(6.103515625e-05, 3, 5)}


def _shortest(value: float, code: str) -> float:
    """The float with the fewest significant digits that packs to the same FP32/FP16 bits.

    0.1 sent as FP32 comes back as 0.10000000149011612 in a double; clients want 0.1.
    Always lossless; at an exact decimal tie (FP16 0.015625) it may keep one digit more.
    """
    if not math.isfinite(value) or value == 0:
        return value
    exact = struct.pack("<" + code, value)
    spec = _FLOATS[code]
    first = spec.first_digits if abs(value) >= spec.min_normal else 1
    for digits in range(first, spec.max_digits + 1):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<" + code, candidate) == exact:
            return candidate
    return value


def _shortest_fp32(values: list[float]) -> list[object]:
    """`_shortest` for a whole FP32 tensor, one digit count at a time for all values.

    `array("f")` rounds a batch of candidates to FP32 in C, which keeps a large output
    several times cheaper than packing each candidate on its own.
    """
    spec = _FLOATS["f"]
    out: list[object] = list(values)
    todo = [i for i, v in enumerate(values) if math.isfinite(v) and abs(v) >= spec.min_normal]
    for digits in range(spec.first_digits, spec.max_digits + 1):
        candidates = [float(f"{values[i]:.{digits}g}") for i in todo]
        rounded = array("f", candidates).tolist()
        left = []
        for index, candidate, back in zip(todo, candidates, rounded, strict=True):
            if back == values[index]:
                out[index] = candidate
            else:
                left.append(index)
        todo = left
    for index, value in enumerate(values):  # subnormals: rare, searched one by one
        if value and abs(value) < spec.min_normal:
            out[index] = _shortest(value, "f")
    return out


def _parameters_json(params: Mapping[str, v2.InferParameter]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, choice) if choice else None
    return out


# --- metadata and errors -----------------------------------------------------------------


def metadata_to_json(resp: v2.ModelMetadataResponse) -> dict[str, object]:
    """The V2 REST model metadata object for a ModelMetadataResponse."""
    return {
        "name": resp.name,
        "versions": list(resp.versions),
        "platform": resp.platform,
        "inputs": [_tensor_metadata(t) for t in resp.inputs],
        "outputs": [_tensor_metadata(t) for t in resp.outputs],
    }


def _tensor_metadata(tensor: v2.ModelMetadataResponse.TensorMetadata) -> dict[str, object]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": [int(d) for d in tensor.shape],
    }


def error_body(message: str) -> dict[str, str]:
    """The V2 REST error object."""
    return {"error": message}
