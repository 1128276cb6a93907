"""The V2 REST face on a real 127.0.0.1 port, with a fake inference path answering like MLServer.

The fake stands for the router's gRPC inference path: it gets the serialized request bytes
and answers for the tutorial's sklearn MNIST model (`predict`, INT64 [1] -> 8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router import rest
from mmesh.router.errors import (
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    Passthrough,
    RequestTimeout,
    RouterError,
    Unimplemented,
)
from tests.unit.router.test_restconv import MNIST_DIGIT, TUTORIAL_REST_BODY

MODEL = "example-sklearn-isvc"
CONCRETE = "example-sklearn-isvc__isvc-3642375d03"
MAX_BODY = 64 * 1024

TUTORIAL_ANSWER = {
    "model_name": CONCRETE,
    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [8]}],
}


@dataclass
class FakeInferencePath:
    """Records each call and answers like MLServer serving the tutorial model."""

    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    error: BaseException | None = None
    answer: bytes | None = None

    async def call(self, method: str, request: bytes, headers: Mapping[str, str]) -> bytes:
        self.calls.append((method, request, dict(headers)))
        if self.error is not None:
            raise self.error
        if self.answer is not None:
            return self.answer
        if method == rest.MODEL_INFER:
            return self._infer(v2.ModelInferRequest.FromString(request)).SerializeToString()
        if method == rest.MODEL_METADATA:
            return self._metadata(v2.ModelMetadataRequest.FromString(request)).SerializeToString()
        raise Unimplemented(f"{method} is not allowed")

    def _infer(self, request: v2.ModelInferRequest) -> v2.ModelInferResponse:
        if request.model_name != MODEL:
            raise ModelNotFound(f"model {request.model_name} not found")
        (tensor,) = request.inputs
        if (tensor.name, tensor.datatype, list(tensor.shape)) != ("predict", "FP32", [1, 64]):
            raise Passthrough("INVALID_ARGUMENT", "Unexpected input: expected predict FP32 [1, 64]")
        assert list(tensor.contents.fp32_contents) == MNIST_DIGIT
        output = v2.ModelInferResponse.InferOutputTensor(
            name="predict",
            datatype="INT64",
            shape=[1],
            contents=v2.InferTensorContents(int64_contents=[8]),
        )
        return v2.ModelInferResponse(model_name=CONCRETE, id=request.id, outputs=[output])

    def _metadata(self, request: v2.ModelMetadataRequest) -> v2.ModelMetadataResponse:
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=CONCRETE,
            versions=[request.version] if request.version else [],
            platform="mlserver",
            inputs=[tensor(name="predict", datatype="FP32", shape=[-1, 64])],
            outputs=[tensor(name="predict", datatype="INT64", shape=[-1])],
        )


@dataclass
class Readiness:
    ready: bool = True

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
def fake() -> FakeInferencePath:
    return FakeInferencePath()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def client(fake, readiness) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = rest.build_rest_app(fake, readiness=readiness, max_body_bytes=MAX_BODY)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


# --- inference -----------------------------------------------------------------------------


async def test_tutorial_infer(client, fake) -> None:
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == TUTORIAL_ANSWER
    ((method, request, headers),) = fake.calls
    assert method == "/inference.GRPCInferenceService/ModelInfer"
    decoded = v2.ModelInferRequest.FromString(request)
    assert (decoded.model_name, decoded.model_version) == (MODEL, "")
    assert headers == {}


async def test_versioned_infer_sets_model_version_and_echoes_the_id(client, fake) -> None:
    body = {**json.loads(TUTORIAL_REST_BODY), "id": "req-7"}
    resp = await client.post(f"/v2/models/{MODEL}/versions/3/infer", json=body)
    assert resp.status == 200
    assert await resp.json() == {**TUTORIAL_ANSWER, "id": "req-7"}
    decoded = v2.ModelInferRequest.FromString(fake.calls[0][1])
    assert (decoded.model_version, decoded.id) == ("3", "req-7")


async def test_routing_headers_are_forwarded_and_others_are_not(client, fake) -> None:
    headers = {
        "MM-VModel-Id": MODEL,
        "mm-model-id": CONCRETE,
        "Mm-Balanced": "true",
        "X-Other": "no",
        "Content-Type": "application/json",
    }
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY, headers=headers)
    assert resp.status == 200
    assert fake.calls[0][2] == {
        "mm-model-id": CONCRETE,
        "mm-vmodel-id": MODEL,
        "mm-balanced": "true",
    }


async def test_raw_output_contents_are_decoded(client, fake) -> None:
    output = v2.ModelInferResponse.InferOutputTensor(name="p", datatype="FP32", shape=[2])
    fake.answer = v2.ModelInferResponse(
        model_name=CONCRETE,
        outputs=[output],
        raw_output_contents=[bytes.fromhex("cdcccc3d0000c03f")],
    ).SerializeToString()
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY)
    assert (await resp.json())["outputs"][0]["data"] == [0.1, 1.5]


# --- metadata and health -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "version"), [(f"/v2/models/{MODEL}", ""), (f"/v2/models/{MODEL}/versions/2", "2")]
)
async def test_model_metadata(client, fake, path, version) -> None:
    resp = await client.get(path, headers={"mm-vmodel-id": MODEL})
    assert resp.status == 200
    assert await resp.json() == {
        "name": CONCRETE,
        "versions": [version] if version else [],
        "platform": "mlserver",
        "inputs": [{"name": "predict", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    ((method, request, headers),) = fake.calls
    assert method == "/inference.GRPCInferenceService/ModelMetadata"
    assert v2.ModelMetadataRequest.FromString(request) == v2.ModelMetadataRequest(
        name=MODEL, version=version
    )
    assert headers == {"mm-vmodel-id": MODEL}


async def test_live(client) -> None:
    resp = await client.get("/v2/health/live")
    assert (resp.status, await resp.json()) == (200, {"live": True})


async def test_ready_follows_readiness(client, readiness) -> None:
    resp = await client.get("/v2/health/ready")
    assert (resp.status, await resp.json()) == (200, {"ready": True})
    readiness.ready = False
    resp = await client.get("/v2/health/ready")
    assert (resp.status, await resp.json()) == (503, {"ready": False})


async def test_server_metadata(client) -> None:
    resp = await client.get("/v2")
    body = await resp.json()
    assert resp.status == 200
    assert body["name"] == "mmesh"
    assert isinstance(body["version"], str)
    assert body["extensions"] == []


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b"[1]", "request body: expected a JSON object"),
        (b'{"inputs": [{"name": "predict", "shape": [1, 64], "datatype": "FP16", "data": []}]}',
         "inputs[0].datatype: FP16 is not supported"),
        (json.dumps(json.loads(TUTORIAL_REST_BODY) | {"inputs": [
            {"name": "predict", "shape": [1, 64], "datatype": "FP32", "data": MNIST_DIGIT[:63]}
        ]}).encode(), "inputs[0].data: expected 64 values for shape [1, 64], got 63"),
    ],
)  # fmt: skip
async def test_bad_bodies_are_400_without_a_call(client, fake, body, message) -> None:
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=body)
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(message)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelNotFound("model nope not found"), 404),
        (InvalidRequest("must include mm-model-id header"), 400),
        (NoCapacity("no instance can hold the model"), 503),
        (RequestTimeout("deadline passed while loading"), 504),
        (Unimplemented("Streaming not supported yet"), 501),
        (RouterError("something broke"), 500),
        (Passthrough("INVALID_ARGUMENT", "runtime says: bad input"), 400),
        (Passthrough("NOT_FOUND", "runtime says: no such model"), 404),
        (Passthrough("RESOURCE_EXHAUSTED", "runtime says: busy"), 429),
        (Passthrough("DATA_LOSS", "runtime says: lost"), 500),
    ],
    ids=lambda v: (
        type(v).__name__ + getattr(v, "grpc_code", "") if isinstance(v, Exception) else str(v)
    ),
)
async def test_router_errors_keep_their_http_status(client, fake, error, status) -> None:
    fake.error = error
    for resp in (
        await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY),
        await client.get(f"/v2/models/{MODEL}"),
    ):
        assert resp.status == status
        assert await resp.json() == {"error": str(error)}


async def test_runtime_rejection_reaches_the_client(client) -> None:
    body = TUTORIAL_REST_BODY.replace('"predict"', '"wrong"')
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=body)
    assert resp.status == 400
    assert await resp.json() == {"error": "Unexpected input: expected predict FP32 [1, 64]"}


async def test_unknown_model_is_404(client) -> None:
    resp = await client.post("/v2/models/nope/infer", data=TUTORIAL_REST_BODY)
    assert (resp.status, await resp.json()) == (404, {"error": "model nope not found"})


async def test_unexpected_error_is_500_logged_and_the_app_keeps_serving(
    client, fake, caplog
) -> None:
    fake.error = ZeroDivisionError("boom")
    with caplog.at_level(logging.ERROR, logger="mmesh.router.rest"):
        resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY)
    assert resp.status == 500
    assert "error" in await resp.json()
    (record,) = [r for r in caplog.records if r.name == "mmesh.router.rest"]
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    fake.error = None
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY)
    assert (resp.status, await resp.json()) == (200, TUTORIAL_ANSWER)


async def test_malformed_answer_from_the_inference_path_is_500(client, fake) -> None:
    fake.answer = b"\xff\xff\xff"
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=TUTORIAL_REST_BODY)
    assert resp.status == 500
    assert "malformed ModelInferResponse" in (await resp.json())["error"]


async def test_body_over_the_limit_is_413(client, fake) -> None:
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=b" " * (MAX_BODY + 1))
    assert resp.status == 413
    assert await resp.json() == {"error": f"request body is larger than {MAX_BODY} bytes"}
    assert fake.calls == []


async def test_chunked_body_over_the_limit_is_413(client, fake) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    resp = await client.post(f"/v2/models/{MODEL}/infer", data=chunks())
    assert resp.status == 413
    assert "error" in await resp.json()
    assert fake.calls == []


async def test_body_at_the_limit_is_read(client) -> None:
    body = TUTORIAL_REST_BODY.encode()
    padded = body + b" " * (MAX_BODY - len(body))
    resp = await client.post(f"/v2/models/{MODEL}/infer", data=padded)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/v2/models/a/b/infer", 404),
        ("GET", f"/v2/models/{MODEL}/infer", 405),
        ("PUT", f"/v2/models/{MODEL}/infer", 405),
        ("DELETE", "/v2/health/live", 405),
    ],
)
async def test_unknown_routes_answer_json(client, method, path, status) -> None:
    resp = await client.request(method, path)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert path in (await resp.json())["error"]


# --- the tutorial's own curl command -------------------------------------------------------

TUTORIAL_CURL = (
    "MODEL_NAME=example-sklearn-isvc\n"
    "curl -X POST -k http://localhost:8008/v2/models/${MODEL_NAME}/infer -d '"
    + TUTORIAL_REST_BODY
    + "'\n"
)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_tutorial_curl_command(client) -> None:
    script = TUTORIAL_CURL.replace("localhost:8008", f"localhost:{client.port}")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, stderr.decode()
    answer = json.loads(stdout)
    assert answer["model_name"] == CONCRETE
    assert answer["outputs"][0]["data"] == [8]
    assert answer == TUTORIAL_ANSWER
