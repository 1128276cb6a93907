"""Limits against abuse on a real router (stub runtime, real etcd): the message-size limit on
the gRPC and REST faces, and the per-model bound on requests in flight. Every refused
request gets a status and a message that says which limit, and the router keeps serving."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager
from typing import Any

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import ETCDCTL_BIN, EtcdServer
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
LIMIT_BYTES = MIB
INFLIGHT_LIMIT = 2
SLOW_LOAD_MS = 5000

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


def infer_request(name: str, value: float = 1.0) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[value])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


REST_BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
).encode()


def register(c: RouterClients, model_id: str, key: dict[str, Any] | None = None) -> None:
    info = mm.ModelInfo(type="stub", path=f"models/{model_id}", key=json.dumps(key or {}))
    c.mesh.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=info), timeout=10)


def rest_post(router: RouterProc, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{router.rest_port}{path}", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def registry_keys(etcd: EtcdServer, router: RouterProc) -> list[str]:
    prefix = f"{router.root_prefix}/mm/modelmesh-serving/registry/"
    out = subprocess.run(
        [
            str(ETCDCTL_BIN),
            f"--endpoints={etcd.endpoint}",
            "get",
            "--prefix",
            "--keys-only",
            prefix,
        ],
        env={"ETCDCTL_API": "3"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture
def small_router(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Iterator[RouterProc]:
    """A router whose messages may be at most 1 MiB."""
    with (
        start_stub_runtime() as stub,
        start_router(
            etcd_endpoint=etcd_server.endpoint,
            runtime_port=stub.port,
            env={"MM_SVC_GRPC_MAX_MSG_SIZE": str(LIMIT_BYTES)},
        ) as router,
    ):
        yield router


def test_grpc_request_over_the_size_limit_is_resource_exhausted_and_serving_goes_on(
    small_router: RouterProc, etcd_server: EtcdServer
) -> None:
    with clients(small_router) as c:
        register(c, "sized")
        oversized = infer_request("sized")
        oversized.raw_input_contents.append(b"\x01" * (2 * LIMIT_BYTES))
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(oversized, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(LIMIT_BYTES) in (err.value.details() or "")

        huge_key = mm.ModelInfo(type="stub", key="k" * (2 * LIMIT_BYTES))
        with pytest.raises(grpc.RpcError) as err:
            c.mesh.registerModel(
                mm.RegisterModelRequest(modelId="huge-registration", modelInfo=huge_key),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        answer = c.infer.ModelInfer(infer_request("sized", 3.0), timeout=10)
        assert list(answer.outputs[0].contents.fp32_contents) == [3.0]
    assert [k.rsplit("/", 1)[1] for k in registry_keys(etcd_server, small_router)] == ["sized"]


def test_rest_body_over_the_size_limit_is_413_naming_the_limit_and_serving_goes_on(
    small_router: RouterProc,
) -> None:
    with clients(small_router) as c:
        register(c, "sized-rest")

    status, body = rest_post(small_router, "/v2/models/sized-rest/infer", b" " * (LIMIT_BYTES + 1))
    assert (status, body) == (413, {"error": f"request body is larger than {LIMIT_BYTES} bytes"})

    status, body = rest_post(small_router, "/v2/models/sized-rest/infer", REST_BODY)
    assert status == 200 and body["outputs"][0]["data"] == [1.0]


@pytest.fixture
def bounded_router(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Iterator[RouterProc]:
    """A router that lets each model have 2 requests in flight; two loads at a time."""
    with (
        start_stub_runtime("--loading-concurrency", "2") as stub,
        start_router(
            etcd_endpoint=etcd_server.endpoint,
            runtime_port=stub.port,
            env={"MM_MAX_INFLIGHT_PER_MODEL": str(INFLIGHT_LIMIT)},
        ) as router,
    ):
        yield router


def test_requests_beyond_the_in_flight_bound_of_a_model_are_refused(
    bounded_router: RouterProc,
) -> None:
    """Three requests wait on a slow load: two are admitted, one is refused at once. While
    the two wait, another model is served and a REST request for the busy one gets 429."""
    with clients(bounded_router) as c, futures.ThreadPoolExecutor(max_workers=3) as pool:
        register(c, "slow", key={"stub": {"delay_ms": SLOW_LOAD_MS}})
        register(c, "other")

        calls = [
            pool.submit(c.infer.ModelInfer, infer_request("slow", i), timeout=30) for i in range(3)
        ]
        refused = next(f for f in futures.as_completed(calls) if f.exception() is not None)
        started = time.monotonic()
        error = refused.exception()
        assert isinstance(error, grpc.RpcError)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error.details() or ""
        assert "model slow" in details and f"MM_MAX_INFLIGHT_PER_MODEL={INFLIGHT_LIMIT}" in details

        assert c.infer.ModelInfer(infer_request("other"), timeout=10).model_name == "other"
        status, body = rest_post(bounded_router, "/v2/models/slow/infer", REST_BODY)
        assert time.monotonic() - started < SLOW_LOAD_MS / 1000, "the slow load ended too soon"
        assert status == 429
        assert "model slow" in body["error"] and str(INFLIGHT_LIMIT) in body["error"]

        admitted = [f.result() for f in calls if f is not refused]
        assert sorted(a.outputs[0].contents.fp32_contents[0] for a in admitted) in (
            [0.0, 1.0],
            [0.0, 2.0],
            [1.0, 2.0],
        )

    status, body = rest_post(bounded_router, "/v2/models/slow/infer", REST_BODY)
    assert status == 200 and body["model_name"] == "slow"
