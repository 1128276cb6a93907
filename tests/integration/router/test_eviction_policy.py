"""One router over a real etcd and the stub runtime, in an over-committed cache: the
default (value) eviction policy keeps a frequent model while one-off models come and go,
and a load that cannot find room within the load timeout fails naming cache churn."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]
THREE_SLOTS = ("--capacity-bytes", str(12 * MIB), "--size-bytes", str(4 * MIB))
THREE_SLOTS += ("--default-size-bytes", str(MIB), "--load-delay-ms", "100")


def infer(c: RouterClients, name: str) -> str:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[1])
    )
    request = v2.ModelInferRequest(model_name=name, inputs=[tensor])
    return str(c.infer.ModelInfer(request, timeout=20).model_name)


def register(c: RouterClients, *model_ids: str) -> None:
    for model_id in model_ids:
        info = mm.ModelInfo(type="stub", path=f"models/{model_id}")
        c.mesh.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=info), timeout=30)


def test_one_off_models_evict_each_other_and_the_frequent_one_stays(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        start_stub_runtime(*THREE_SLOTS) as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as router,
        clients(router) as c,
    ):
        once = [f"once-{i}" for i in range(5)]
        register(c, "hot", *once)
        for _ in range(5):
            assert infer(c, "hot") == "hot"
        for name in once:  # each one-off is answered; none of them pushes "hot" out
            assert infer(c, name) == name
            assert infer(c, "hot") == "hot"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(stub.stats()["unloads"].values()) < 3:
            time.sleep(0.05)
        stats = stub.stats()
        assert "hot" not in stats["unloads"]
        assert stats["loads"]["hot"] == 1
        assert sorted(stats["unloads"]) == once[:3]
        assert router.metric("modelmesh_model_evicted_total") == 3


def test_lru_policy_is_selectable_and_evicts_the_frequent_model(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_EVICTION_POLICY": "lru", "MM_MIN_CHURN_AGE_MS": "0"}
    with (
        start_stub_runtime(*THREE_SLOTS) as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env) as r,
        clients(r) as c,
    ):
        register(c, "hot", "a", "b", "c")
        for name in ("hot", "hot", "hot", "a", "b", "c"):
            assert infer(c, name) == name
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not stub.stats()["unloads"]:
            time.sleep(0.05)
        assert stub.stats()["unloads"] == {"hot": 1}


def test_no_room_within_the_load_timeout_fails_naming_cache_churn(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_MIN_CHURN_AGE_MS": "600000"}
    with (
        start_stub_runtime(*THREE_SLOTS, "--load-timeout-ms", "1500") as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env) as r,
        clients(r) as c,
    ):
        register(c, "a", "b", "c", "d")
        for name in ("a", "b", "c"):
            assert infer(c, name) == name
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            infer(c, "d")
        waited = time.monotonic() - started
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = err.value.details() or ""
        assert "cache churn" in details, details
        assert "1536/1536 units used by 3 loaded" in details
        assert "3 loaded models used within the last 600000 ms (MM_MIN_CHURN_AGE_MS)" in details
        assert "within the load timeout (1500 ms)" in details
        assert "Add capacity or instances, or lower MM_MIN_CHURN_AGE_MS" in details
        assert waited >= 1.4  # it waited for room first
        assert "d" not in stub.stats()["loads"]
