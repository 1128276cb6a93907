"""Model and vmodel ids that would break an etcd key or a directory name are refused by a real
router on every API that takes one (management, gRPC inference, REST), with
INVALID_ARGUMENT / 400 naming the rule, and nothing reaches etcd."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import ETCDCTL_BIN, EtcdServer
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]

BAD_IDS = [
    pytest.param("a/b", "must not contain '/'", id="slash"),
    pytest.param("../etc", "must not contain '/'", id="dot-dot-slash"),
    pytest.param("..", "must not be '.' or '..'", id="dot-dot"),
    pytest.param("nul\x00byte", "control character U+0000", id="nul"),
    pytest.param("bell\x07", "control character U+0007", id="control"),
    pytest.param("line\nbreak", "control character U+000A", id="newline"),
    pytest.param("x" * 256, "at most 255 bytes of UTF-8, got 256", id="too-long"),
    pytest.param("é" * 128, "at most 255 bytes of UTF-8, got 256", id="too-long-utf8"),
]
INFO = mm.ModelInfo(type="stub", path="models/p")


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer
) -> Iterator[RouterProc]:
    """One router for the whole module: every test only sends refused requests."""
    from tests.fixtures.router import router_process
    from tests.fixtures.runtimes import stub_runtime_process

    tmp = tmp_path_factory.mktemp("ids")
    with (
        stub_runtime_process(tmp) as stub,
        router_process(tmp, etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as proc,
    ):
        yield proc


def etcd_keys(etcd: EtcdServer, router: RouterProc) -> list[str]:
    """Every registry and vmodel key of the router's mesh, read from etcd itself."""
    base = f"{router.root_prefix}/mm/modelmesh-serving/"
    keys = []
    for table in ("registry/", "vmodels/"):
        command = [str(ETCDCTL_BIN), f"--endpoints={etcd.endpoint}", "get", "--prefix"]
        out = subprocess.run(
            [*command, "--keys-only", base + table],
            env={"ETCDCTL_API": "3"},
            check=True,
            capture_output=True,
        ).stdout
        keys += [k.decode(errors="replace")[len(base) :] for k in out.splitlines() if k]
    return keys


def refused(call: Callable[[], object]) -> str:
    """The details of the INVALID_ARGUMENT `call` must end with."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details() or ""


def management_calls(c: RouterClients, bad: str) -> dict[str, Callable[[], object]]:
    return {
        "registerModel": lambda: c.mesh.registerModel(
            mm.RegisterModelRequest(modelId=bad, modelInfo=INFO, loadNow=True), timeout=10
        ),
        "setVModel(vmodel)": lambda: c.mesh.setVModel(
            mm.SetVModelRequest(vModelId=bad, targetModelId="fine-target", modelInfo=INFO),
            timeout=10,
        ),
        "setVModel(target)": lambda: c.mesh.setVModel(
            mm.SetVModelRequest(vModelId="fine-vmodel", targetModelId=bad, modelInfo=INFO),
            timeout=10,
        ),
        "unregisterModel": lambda: c.mesh.unregisterModel(
            mm.UnregisterModelRequest(modelId=bad), timeout=10
        ),
        "ensureLoaded": lambda: c.mesh.ensureLoaded(
            mm.EnsureLoadedRequest(modelId=bad, sync=True), timeout=10
        ),
        "getModelStatus": lambda: c.mesh.getModelStatus(
            mm.GetStatusRequest(modelId=bad), timeout=10
        ),
        "deleteVModel": lambda: c.mesh.deleteVModel(
            mm.DeleteVModelRequest(vModelId=bad), timeout=10
        ),
        "getVModelStatus": lambda: c.mesh.getVModelStatus(
            mm.GetVModelStatusRequest(vModelId=bad), timeout=10
        ),
    }


@pytest.mark.parametrize(("bad", "rule"), BAD_IDS)
def test_management_api_refuses_the_id_and_writes_nothing(
    router: RouterProc, etcd_server: EtcdServer, bad: str, rule: str
) -> None:
    with clients(router) as c:
        for name, call in management_calls(c, bad).items():
            details = refused(call)
            assert rule in details, f"{name}: {details}"
    assert etcd_keys(etcd_server, router) == []


def test_empty_ids_are_refused_by_the_management_api(router: RouterProc) -> None:
    with clients(router) as c:
        for name, call in management_calls(c, "").items():
            assert "must not be empty" in refused(call), name


def infer_request(name: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[1])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


@pytest.mark.parametrize(("bad", "rule"), BAD_IDS)
def test_grpc_inference_refuses_the_id_by_name_and_by_header(
    router: RouterProc, etcd_server: EtcdServer, bad: str, rule: str
) -> None:
    with clients(router) as c:
        assert rule in refused(lambda: c.infer.ModelInfer(infer_request(bad), timeout=10))
        assert rule in refused(
            lambda: c.infer.ModelMetadata(v2.ModelMetadataRequest(name=bad), timeout=10)
        )
        for header in ("mm-model-id-bin", "mm-vmodel-id-bin"):
            assert rule in refused(
                lambda h=header: c.infer.ModelInfer(
                    infer_request(""), metadata=[(h, bad.encode())], timeout=10
                )
            )
    assert etcd_keys(etcd_server, router) == []


def rest(router: RouterProc, method: str, path: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{router.rest_port}{path}",
        data=body if method == "POST" else None,
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize(("bad", "rule"), BAD_IDS)
def test_rest_refuses_the_model_name_with_400(
    router: RouterProc, etcd_server: EtcdServer, bad: str, rule: str
) -> None:
    # Dots escaped too: a literal '..' segment would be resolved away before routing.
    name = urllib.parse.quote(bad, safe="").replace(".", "%2E")
    for method, path in (("POST", f"/v2/models/{name}/infer"), ("GET", f"/v2/models/{name}")):
        status, body = rest(router, method, path)
        assert status == 400, body
        assert "invalid model id" in body["error"] and rule in body["error"]
    assert etcd_keys(etcd_server, router) == []


def test_valid_unusual_ids_still_work(router: RouterProc, etcd_server: EtcdServer) -> None:
    """The rule refuses only what is dangerous: dots, spaces, non-ASCII and 255 bytes pass."""
    with clients(router) as c:
        for model_id in ("a..b", "with space", "modèle-ü", "y" * 255):
            c.mesh.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=INFO))
            assert c.infer.ModelInfer(infer_request(model_id), timeout=10).model_name == model_id
            c.mesh.unregisterModel(mm.UnregisterModelRequest(modelId=model_id))
    assert etcd_keys(etcd_server, router) == []
