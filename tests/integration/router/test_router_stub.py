"""One router process over a real etcd and the stub runtime: routing, the ModelMesh API,
the LRU cache, shared loads, vmodel transitions, bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import grpc_predict_v2_pb2_grpc as v2_grpc
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.router.wire import read_string_field
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


def infer_request(name: str, value: float = 1.0) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[value])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


def register(
    c: RouterClients,
    model_id: str,
    *,
    key: dict[str, object] | None = None,
    load_now: bool = False,
    sync: bool = False,
) -> mm.ModelStatusInfo:
    info = mm.ModelInfo(type="stub", path=f"models/{model_id}", key=json.dumps(key or {}))
    resp: mm.ModelStatusInfo = c.mesh.registerModel(
        mm.RegisterModelRequest(modelId=model_id, modelInfo=info, loadNow=load_now, sync=sync),
        timeout=30,
    )
    return resp


def status(c: RouterClients, model_id: str) -> int:
    return int(c.mesh.getModelStatus(mm.GetStatusRequest(modelId=model_id)).status)


@pytest.fixture
def mesh(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Iterator[tuple[RouterProc, StubRuntimeProc]]:
    """Room for 3 models of 4 MiB; loads take 200 ms; LRU eviction, no churn guard (the
    default value policy has its own tests in test_eviction_policy.py)."""
    with (
        start_stub_runtime(
            "--capacity-bytes",
            str(12 * MIB),
            "--size-bytes",
            str(4 * MIB),
            "--default-size-bytes",
            str(MIB),
            "--load-delay-ms",
            "200",
            "--loading-concurrency",
            "2",
        ) as stub,
        start_router(
            etcd_endpoint=etcd_server.endpoint,
            runtime_port=stub.port,
            env={"MM_MIN_CHURN_AGE_MS": "0", "MM_EVICTION_POLICY": "lru"},
        ) as router,
    ):
        yield router, stub


def test_registered_model_loads_on_first_request_and_answers(mesh) -> None:
    router, stub = mesh
    with clients(router) as c:
        first = register(c, "echo-1")
        assert first.status == mm.ModelStatusInfo.NOT_LOADED
        resp = c.infer.ModelInfer(infer_request("echo-1", 7.0), timeout=10)
        assert resp.model_name == "echo-1"
        assert list(resp.outputs[0].contents.fp32_contents) == [7.0]
        loaded = c.mesh.getModelStatus(mm.GetStatusRequest(modelId="echo-1"))
        assert loaded.status == mm.ModelStatusInfo.LOADED
        assert [ci.location for ci in loaded.modelCopyInfos] == [router.instance_id]
    assert stub.stats()["loads"] == {"echo-1": 1}


def test_vmodel_name_routes_to_its_concrete_model(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        vm = c.mesh.setVModel(
            mm.SetVModelRequest(
                vModelId="my-isvc",
                targetModelId="my-isvc__isvc-0123456789",
                modelInfo=mm.ModelInfo(type="stub", path="p"),
                autoDeleteTargetModel=True,
                owner="ksp",
            ),
            timeout=10,
        )
        assert vm.status == mm.VModelStatusInfo.DEFINED
        assert vm.activeModelId == "my-isvc__isvc-0123456789" and vm.owner == "ksp"
        resp = c.infer.ModelInfer(infer_request("my-isvc"), timeout=10)
        assert resp.model_name == "my-isvc__isvc-0123456789"
        by_header = c.infer.ModelInfer(
            infer_request(""), timeout=10, metadata=[("mm-vmodel-id", "my-isvc")]
        )
        assert by_header.model_name == "my-isvc__isvc-0123456789"


def test_lru_evicts_exactly_what_an_lru_predicts(mesh) -> None:
    router, stub = mesh
    with clients(router) as c:
        for m in ("m1", "m2", "m3", "m4", "m5"):
            register(c, m)
        for m in ("m1", "m2", "m3", "m1", "m4", "m5", "m2"):
            assert c.infer.ModelInfer(infer_request(m), timeout=10).model_name == m
            time.sleep(0.01)  # distinct last-used times
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(stub.stats()["unloads"].values()) < 3:
            time.sleep(0.05)
        assert stub.stats()["unloads"] == {"m2": 1, "m3": 1, "m1": 1}
        states = {m: status(c, m) for m in ("m1", "m2", "m3", "m4", "m5")}
        assert states == {
            "m1": mm.ModelStatusInfo.NOT_LOADED,
            "m2": mm.ModelStatusInfo.LOADED,
            "m3": mm.ModelStatusInfo.NOT_LOADED,
            "m4": mm.ModelStatusInfo.LOADED,
            "m5": mm.ModelStatusInfo.LOADED,
        }
    assert router.metric("modelmesh_model_evicted_total") == 3
    assert router.metric("modelmesh_instance_models_total") == 3
    assert router.metric("modelmesh_instance_used_bytes") == 12 * MIB


def test_100_concurrent_first_requests_share_one_load(mesh) -> None:
    router, stub = mesh
    with clients(router) as c:
        register(c, "popular")
        with futures.ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(
                pool.map(
                    lambda i: c.infer.ModelInfer(infer_request("popular", i), timeout=20),
                    range(100),
                )
            )
    assert [list(a.outputs[0].contents.fp32_contents) for a in answers] == [
        [float(i)] for i in range(100)
    ]
    assert stub.stats()["loads"] == {"popular": 1}


def test_unknown_model_is_not_found_naming_it(mesh) -> None:
    router, _ = mesh
    with clients(router) as c, pytest.raises(grpc.RpcError) as err:
        c.infer.ModelInfer(infer_request("nobody-registered-me"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nobody-registered-me" in (err.value.details() or "")


def test_both_headers_is_invalid_argument(mesh) -> None:
    router, _ = mesh
    with clients(router) as c, pytest.raises(grpc.RpcError) as err:
        c.infer.ModelInfer(
            infer_request(""), timeout=10, metadata=[("mm-model-id", "a"), ("mm-vmodel-id", "b")]
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_malformed_bytes_are_invalid_argument(mesh) -> None:
    router, _ = mesh
    with grpc.insecure_channel(router.target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (err.value.details() or "")


def test_failed_load_reports_loading_failed_and_others_keep_serving(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        register(c, "broken", key={"stub": {"fail": "weights are corrupt"}})
        register(c, "healthy")
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("broken"), timeout=10)
        assert "weights are corrupt" in (err.value.details() or "")
        info = c.mesh.getModelStatus(mm.GetStatusRequest(modelId="broken"))
        assert info.status == mm.ModelStatusInfo.LOADING_FAILED
        assert list(info.errors) == ["weights are corrupt"]
        assert c.infer.ModelInfer(infer_request("healthy"), timeout=10).model_name == "healthy"


def test_vmodel_update_under_load_fails_no_request(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        c.mesh.setVModel(
            mm.SetVModelRequest(
                vModelId="svc",
                targetModelId="svc__v1",
                modelInfo=mm.ModelInfo(type="stub"),
                autoDeleteTargetModel=True,
            ),
            timeout=10,
        )
        c.infer.ModelInfer(infer_request("svc"), timeout=10)
        served: list[list[str]] = [[] for _ in range(4)]
        errors: list[Exception] = []
        stop = threading.Event()

        def traffic(mine: list[str]) -> None:
            while not stop.is_set():
                try:
                    mine.append(c.infer.ModelInfer(infer_request("svc"), timeout=10).model_name)
                except grpc.RpcError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=traffic, args=(mine,)) for mine in served]
        for t in threads:
            t.start()
        vm = c.mesh.setVModel(
            mm.SetVModelRequest(
                vModelId="svc",
                targetModelId="svc__v2",
                modelInfo=mm.ModelInfo(type="stub"),
                autoDeleteTargetModel=True,
                sync=True,
            ),
            timeout=30,
        )
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert vm.status == mm.VModelStatusInfo.DEFINED and vm.activeModelId == "svc__v2"
        for mine in served:  # each client sees v1 until the switch, then only v2
            assert mine[0] == "svc__v1" and mine[-1] == "svc__v2"
            switch = mine.index("svc__v2")
            assert set(mine[:switch]) == {"svc__v1"} and set(mine[switch:]) == {"svc__v2"}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and status(c, "svc__v1") != mm.ModelStatusInfo.NOT_FOUND:
            time.sleep(0.05)
        assert status(c, "svc__v1") == mm.ModelStatusInfo.NOT_FOUND  # auto-deleted


def test_loads_never_exceed_the_runtime_loading_concurrency(mesh) -> None:
    router, stub = mesh  # the stub allows 2 concurrent loads
    with clients(router) as c:
        for i in range(3):
            register(c, f"par-{i}", key={"stub": {"size": MIB}})
        with futures.ThreadPoolExecutor(max_workers=3) as pool:
            names = list(
                pool.map(
                    lambda i: c.infer.ModelInfer(infer_request(f"par-{i}"), timeout=20).model_name,
                    range(3),
                )
            )
    assert names == ["par-0", "par-1", "par-2"]
    assert stub.stats()["max_loading"] == 2


def test_router_answers_v2_health_and_metadata_itself(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        assert c.infer.ServerLive(v2.ServerLiveRequest(), timeout=5).live
        assert c.infer.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
        assert c.infer.ServerMetadata(v2.ServerMetadataRequest(), timeout=5).name == "mmesh"
        register(c, "meta-model")
        # Registered, not loaded: ready, the first request loads it (README, model readiness).
        assert c.infer.ModelReady(v2.ModelReadyRequest(name="meta-model"), timeout=5).ready
        meta = c.infer.ModelMetadata(v2.ModelMetadataRequest(name="meta-model"), timeout=10)
        assert meta.name == "meta-model" and meta.platform == "stub"
        assert c.infer.ModelReady(v2.ModelReadyRequest(name="meta-model"), timeout=5).ready
        assert not c.infer.ModelReady(v2.ModelReadyRequest(name="unknown"), timeout=5).ready


def test_load_timeout_is_a_load_failure_naming_the_limit(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        start_stub_runtime("--load-timeout-ms", "300") as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as router,
        clients(router) as c,
    ):
        register(c, "slow", key={"stub": {"delay_ms": 2000}})
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("slow"), timeout=10)
        assert "timed out after 300 ms" in (err.value.details() or "")
        info = c.mesh.getModelStatus(mm.GetStatusRequest(modelId="slow"))
        assert info.status == mm.ModelStatusInfo.LOADING_FAILED


def test_large_payloads_pass_and_oversized_ones_are_refused(mesh) -> None:
    router, _ = mesh
    big_channel = grpc.insecure_channel(
        router.target,
        options=[
            ("grpc.max_receive_message_length", 64 * MIB),
            ("grpc.max_send_message_length", 64 * MIB),
        ],
    )
    with clients(router) as c, big_channel:
        infer = v2_grpc.GRPCInferenceServiceStub(big_channel)
        register(c, "big", key={"stub": {"size": MIB}})
        req = infer_request("big")
        req.raw_input_contents.append(b"\x01" * (8 * MIB))
        resp = infer.ModelInfer(req, timeout=20)
        assert resp.model_name == "big" and len(resp.raw_output_contents[0]) == 8 * MIB
        req.raw_input_contents[0] = b"\x01" * (17 * MIB)
        with pytest.raises(grpc.RpcError) as err:
            infer.ModelInfer(req, timeout=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unregistered_model_is_unloaded_and_no_longer_routed(mesh) -> None:
    router, stub = mesh
    with clients(router) as c:
        register(c, "temp")
        c.infer.ModelInfer(infer_request("temp"), timeout=10)
        c.mesh.unregisterModel(mm.UnregisterModelRequest(modelId="temp"), timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "temp" not in stub.stats()["unloads"]:
            time.sleep(0.05)
        assert stub.stats()["unloads"] == {"temp": 1}
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("temp"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_with_a_vmodel_cannot_be_unregistered(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        c.mesh.setVModel(
            mm.SetVModelRequest(
                vModelId="alias", targetModelId="held", modelInfo=mm.ModelInfo(type="stub")
            ),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as err:
            c.mesh.unregisterModel(mm.UnregisterModelRequest(modelId="held"), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "alias" in (err.value.details() or "")


def test_binary_model_id_headers_route_utf8_ids(mesh) -> None:
    router, _ = mesh
    with clients(router) as c:
        register(c, "modèle-ü")
        by_model = c.infer.ModelInfer(
            infer_request(""), timeout=10, metadata=[("mm-model-id-bin", "modèle-ü".encode())]
        )
        assert by_model.model_name == "modèle-ü"
        c.mesh.setVModel(
            mm.SetVModelRequest(vModelId="álias", targetModelId="modèle-ü"), timeout=10
        )
        by_vmodel = c.infer.ModelInfer(
            infer_request(""), timeout=10, metadata=[("mm-vmodel-id-bin", "álias".encode())]
        )
        assert by_vmodel.model_name == "modèle-ü"


def test_target_set_directly_in_etcd_is_loaded_and_promoted(mesh, etcd_server) -> None:
    """The operator moves a vmodel's target by writing etcd; the routers do the rest."""
    import os
    import subprocess

    from mmesh.core.ids import ModelId
    from mmesh.core.records import ModelRecord, VModelRecord

    router, stub = mesh
    base = f"{router.root_prefix}/mm/modelmesh-serving"
    with clients(router) as c:
        c.mesh.setVModel(
            mm.SetVModelRequest(
                vModelId="op-isvc", targetModelId="op-isvc__v1", modelInfo=mm.ModelInfo(type="stub")
            ),
            timeout=10,
        )
        c.infer.ModelInfer(infer_request("op-isvc"), timeout=10)
        env = {**os.environ, "ETCDCTL_API": "3"}
        etcdctl = ["/usr/bin/etcdctl", f"--endpoints={etcd_server.endpoint}", "put"]
        new_model = ModelRecord(model_type="stub", auto_delete=True).to_json().decode()
        subprocess.run([*etcdctl, f"{base}/registry/op-isvc__v2", new_model], env=env, check=True)
        moved = VModelRecord(ModelId("op-isvc__v1"), ModelId("op-isvc__v2")).to_json().decode()
        subprocess.run([*etcdctl, f"{base}/vmodels/op-isvc", moved], env=env, check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            vm = c.mesh.getVModelStatus(mm.GetVModelStatusRequest(vModelId="op-isvc"))
            if vm.status == mm.VModelStatusInfo.DEFINED and vm.activeModelId == "op-isvc__v2":
                break
            time.sleep(0.05)
        assert vm.activeModelId == "op-isvc__v2" and vm.status == mm.VModelStatusInfo.DEFINED
        assert vm.activeModelStatus.status == mm.ModelStatusInfo.LOADED
        assert stub.stats()["loads"].get("op-isvc__v2") == 1


TFS_PREDICT = "tensorflow.serving.PredictionService/Predict"
TS_PREDICTIONS = "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_runtime_data_plane_methods_get_the_concrete_id_where_the_runtime_says(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    """The OVMS adapter reports TF Serving's Predict with the model id at model_spec.name
    (1.1), the TorchServe adapter its Predictions at model_name (1), as the reference's do:
    the router writes the concrete id there and forwards the rest of the bytes untouched.
    A method the runtime does not report is not forwarded."""
    with (
        start_stub_runtime(
            "--method-info", f"{TFS_PREDICT}=1.1", "--method-info", f"{TS_PREDICTIONS}=1"
        ) as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as router,
        clients(router) as c,
        grpc.insecure_channel(router.target) as channel,
    ):  # fmt: skip
        register(c, "ov__isvc-0123456789")
        c.mesh.setVModel(
            mm.SetVModelRequest(vModelId="ov", targetModelId="ov__isvc-0123456789"), timeout=10
        )
        # PredictRequest{model_spec{name, signature_name (3)}, inputs (2)}
        spec = _field(1, b"ov") + _field(3, b"serving_default")
        inputs = _field(2, _field(1, b"x"))
        predict = channel.unary_unary(f"/{TFS_PREDICT}")
        echoed = predict(_field(1, spec) + inputs, metadata=(("mm-vmodel-id", "ov"),), timeout=30)
        assert read_string_field(echoed, (1, 1)) == "ov__isvc-0123456789"
        assert read_string_field(echoed, (1, 3)) == "serving_default"
        assert echoed.endswith(inputs)

        register(c, "ts-model")
        predictions = channel.unary_unary(f"/{TS_PREDICTIONS}")
        request = _field(1, b"whatever") + _field(3, b"{}")
        echoed = predictions(request, metadata=(("mm-model-id", "ts-model"),), timeout=30)
        assert echoed == _field(1, b"ts-model") + _field(3, b"{}")
        assert stub.stats()["infers"] == {"ov__isvc-0123456789": 1, "ts-model": 1}

        classify = channel.unary_unary("/tensorflow.serving.PredictionService/Classify")
        with pytest.raises(grpc.RpcError) as err:
            classify(_field(1, spec), metadata=(("mm-vmodel-id", "ov"),), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
