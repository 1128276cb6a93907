"""Runs tritonclient (gRPC or HTTP) against a V2 endpoint and prints what it saw as JSON.

A separate process on purpose: tritonclient's generated protos and ours both define the
`inference.*` messages, and one protobuf descriptor pool cannot hold both. Usage:
`python -m tests.e2e.v2_client <check> <address> <model>`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

DIGIT_8 = [
    0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0,
    0.0, 8.0, 16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0,
    0.0, 0.0, 2.0, 12.0, 16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0,
    0.0, 0.0, 0.0, 16.0, 16.0, 16.0, 7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0,
]  # fmt: skip


def digits() -> Any:
    return np.array(DIGIT_8, dtype=np.float32).reshape(1, 64)


def error_of(call: Callable[[], Any]) -> dict[str, str]:
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}
    return {"status": "no error", "message": ""}


def grpc_health(address: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as t

    client = t.InferenceServerClient(url=address)
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "model_ready_v1": client.is_model_ready(model, model_version="1"),
        "unknown_ready": client.is_model_ready("no-such-model"),
        "server": client.get_server_metadata(as_json=True),
    }


def grpc_infer_raw(address: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as t

    client = t.InferenceServerClient(url=address)
    tensor = t.InferInput("predict", [1, 64], "FP32")
    tensor.set_data_from_numpy(digits())  # raw_input_contents
    result = client.infer(model, [tensor], client_timeout=120)
    return {
        "model_name": result.get_response().model_name,
        "raw_inputs": True,
        "predict": result.as_numpy("predict").ravel().tolist(),
    }


def grpc_infer_typed(address: str, model: str) -> dict[str, Any]:
    """Typed `contents` (as grpcurl sends them), through tritonclient's generated stub."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="predict", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(DIGIT_8)
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(request, timeout=120)
    output = answer.outputs[0]
    if output.contents.int64_contents:
        values = list(output.contents.int64_contents)
    else:
        values = np.frombuffer(answer.raw_output_contents[0], dtype=np.int64).tolist()
    return {"model_name": answer.model_name, "predict": values}


def grpc_metadata(address: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as t

    client = t.InferenceServerClient(url=address)
    return dict(client.get_model_metadata(model, as_json=True))


def grpc_unknown(address: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as t

    client = t.InferenceServerClient(url=address)
    tensor = t.InferInput("predict", [1, 64], "FP32")
    tensor.set_data_from_numpy(digits())
    return {
        "infer": error_of(lambda: client.infer("no-such-model", [tensor])),
        "metadata": error_of(lambda: client.get_model_metadata("no-such-model")),
    }


def http_health(address: str, model: str) -> dict[str, Any]:
    import tritonclient.http as t

    client = t.InferenceServerClient(url=address, network_timeout=60)
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "model_ready_v1": client.is_model_ready(model, model_version="1"),
        "unknown_ready": client.is_model_ready("no-such-model"),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }


def http_infer(address: str, model: str) -> dict[str, Any]:
    import tritonclient.http as t

    client = t.InferenceServerClient(url=address, network_timeout=120)
    tensor = t.InferInput("predict", [1, 64], "FP32")
    tensor.set_data_from_numpy(digits(), binary_data=False)
    wanted = t.InferRequestedOutput("predict", binary_data=False)
    result = client.infer(model, [tensor], outputs=[wanted])
    return {"response": result.get_response(), "predict": result.as_numpy("predict").tolist()}


def http_infer_binary(address: str, model: str) -> dict[str, Any]:
    """tritonclient HTTP's defaults: binary input data, binary output data."""
    import tritonclient.http as t

    client = t.InferenceServerClient(url=address, network_timeout=120)
    tensor = t.InferInput("predict", [1, 64], "FP32")
    tensor.set_data_from_numpy(digits())
    result = client.infer(model, [tensor])
    output = result.get_output("predict")
    return {
        "model_name": result.get_response()["model_name"],
        "binary_size": output["parameters"]["binary_data_size"],
        "predict": result.as_numpy("predict").tolist(),
    }


def http_unknown(address: str, model: str) -> dict[str, Any]:
    import tritonclient.http as t

    client = t.InferenceServerClient(url=address, network_timeout=60)
    tensor = t.InferInput("predict", [1, 64], "FP32")
    tensor.set_data_from_numpy(digits(), binary_data=False)
    return {
        "infer": error_of(lambda: client.infer("no-such-model", [tensor])),
        "metadata": error_of(lambda: client.get_model_metadata("no-such-model")),
    }


CHECKS = {
    f.__name__: f
    for f in (
        grpc_health, grpc_infer_raw, grpc_infer_typed, grpc_metadata, grpc_unknown,
        http_health, http_infer, http_infer_binary, http_unknown,
    )
}  # fmt: skip


if __name__ == "__main__":
    check, address, model = sys.argv[1:4]
    print(json.dumps(CHECKS[check](address, model)))
