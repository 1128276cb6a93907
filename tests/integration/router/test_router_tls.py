"""Router processes with TLS (MM_TLS_*): gRPC 8033, REST 8008 and the pod-to-pod port speak
TLS only; client certificates as MM_TLS_CLIENT_AUTH says; routers forward to each other over
mutual TLS; a rotated certificate is served to new connections without a restart."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
import trustme

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.router import (
    PodTls,
    RouterClients,
    RouterProc,
    clients,
    served_serial,
)
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]
STUB_ARGS = ("--capacity-bytes", str(12 * MIB), "--size-bytes", str(MIB))


def infer_request(name: str, value: float = 1.0) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[value])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


def register(c: RouterClients, model_id: str) -> None:
    info = mm.ModelInfo(type="stub", path=f"models/{model_id}")
    c.mesh.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=info), timeout=10)


def answer(c: RouterClients, model_id: str, value: float = 3.0) -> list[float]:
    resp = c.infer.ModelInfer(infer_request(model_id, value), timeout=10)
    return list(resp.outputs[0].contents.fp32_contents)


def refused(credentials: grpc.ChannelCredentials | None, router: RouterProc) -> bool:
    """The gRPC port turns this client away (at the handshake: UNAVAILABLE)."""
    with clients(router, credentials) as c:
        try:
            c.infer.ServerLive(v2.ServerLiveRequest(), timeout=3)
        except grpc.RpcError as exc:
            return bool(exc.code() == grpc.StatusCode.UNAVAILABLE)
    return False


def rest_get(url: str, context: ssl.SSLContext | None = None) -> int:
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return int(resp.status)


def rest_infer(router: RouterProc, model_id: str, context: ssl.SSLContext) -> dict[str, object]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [5.0]}]}
    request = urllib.request.Request(
        f"https://127.0.0.1:{router.rest_port}/v2/models/{model_id}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        loaded: dict[str, object] = json.load(resp)
    return loaded


@pytest.fixture
def tls(tmp_path: Path) -> PodTls:
    return PodTls(tmp_path / "tls")


@pytest.fixture
def secure_router(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Callable[..., AbstractContextManager[RouterProc]]:
    """A router with the stub runtime and the given MM_TLS_* env."""

    @contextlib.contextmanager
    def start(env: dict[str, str]) -> Iterator[RouterProc]:
        with (
            start_stub_runtime(*STUB_ARGS) as stub,
            start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env) as r,
        ):
            yield r

    return start


def test_tls_without_client_auth(secure_router, tls: PodTls) -> None:
    with secure_router(tls.env()) as router:
        with clients(router, tls.credentials()) as c:
            register(c, "tls-model")
            assert answer(c, "tls-model") == [3.0]
        # plaintext, and TLS that does not trust the pod's CA, are turned away
        assert refused(None, router)
        other_ca = PodTls(tls.root.parent / "other")
        assert refused(other_ca.credentials(), router)
        # REST is https only, with the same certificate
        https = f"https://127.0.0.1:{router.rest_port}/v2/health/ready"
        assert rest_get(https, tls.ssl_context()) == 200
        assert rest_infer(router, "tls-model", tls.ssl_context())["model_name"] == "tls-model"
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            rest_get(f"http://127.0.0.1:{router.rest_port}/v2/health/ready")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            rest_get(https, ssl.create_default_context())
        # probes stay plain HTTP for the kubelet; /metrics too while its scheme is http
        assert rest_get(f"http://127.0.0.1:{router.probe_port}/ready") == 200
        assert "modelmesh_instance_capacity_bytes" in router.metrics()


def test_client_certificate_required(secure_router, tls: PodTls) -> None:
    client = tls.client_cert()
    stranger = trustme.CA().issue_cert("stranger")
    with secure_router(tls.env("REQUIRE")) as router:
        assert refused(tls.credentials(), router)
        assert refused(tls.credentials(stranger), router)
        with clients(router, tls.credentials(client)) as c:
            register(c, "mtls-model")
            assert answer(c, "mtls-model", 4.0) == [4.0]
        https = f"https://127.0.0.1:{router.rest_port}/v2/health/ready"
        assert rest_get(https, tls.ssl_context(client)) == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            rest_get(https, tls.ssl_context())


def test_client_certificate_optional(secure_router, tls: PodTls) -> None:
    client = tls.client_cert()
    with secure_router(tls.env("OPTIONAL")) as router:
        for credentials in (tls.credentials(), tls.credentials(client)):
            with clients(router, credentials) as c:
                register(c, "opt-model")
                assert answer(c, "opt-model") == [3.0]
        https = f"https://127.0.0.1:{router.rest_port}/v2/health/ready"
        assert rest_get(https, tls.ssl_context()) == 200
        assert rest_get(https, tls.ssl_context(client)) == 200
        assert refused(None, router)


def test_rotated_certificate_is_served_without_restart(secure_router, tls: PodTls) -> None:
    client = tls.client_cert()
    with secure_router(tls.env("OPTIONAL")) as router:
        ports = {
            "grpc": router.grpc_port,
            "rest": router.rest_port,
            "peer": router.internal_port,
        }
        before = tls.serial
        for port in ports.values():
            assert served_serial(port, tls.ssl_context(client)) == before
        with clients(router, tls.credentials()) as c:
            register(c, "rotating")
            assert answer(c, "rotating") == [3.0]
            new = tls.rotate()
            assert new != before
            for name, port in ports.items():
                assert served_serial(port, tls.ssl_context(client)) == new, name
            assert answer(c, "rotating", 6.0) == [6.0]  # the open connection carries on
        with clients(router, tls.credentials()) as c:  # and new ones work
            assert answer(c, "rotating", 7.0) == [7.0]
        assert "TLS certificate reloaded" in router.log.read_text()


def test_peer_port_demands_a_client_certificate(secure_router, tls: PodTls) -> None:
    with secure_router(tls.env()) as router:
        peer = RouterProc(**{**router.__dict__, "grpc_port": router.internal_port})
        assert refused(None, peer)
        assert refused(tls.credentials(), peer)  # external clients need no cert; peers do


# ---------------------------------------------------------------- two pods


@pytest.fixture
def two_pods(
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd_server: EtcdServer,
    tls: PodTls,
) -> Iterator[dict[str, tuple[RouterProc, StubRuntimeProc]]]:
    prefix = f"/tls-{uuid.uuid4().hex[:8]}"
    env = {**tls.env("REQUIRE"), "MM_MIN_CHURN_AGE_MS": "0", "MM_INSTANCE_LEASE_TTL_SECS": "2"}
    with contextlib.ExitStack() as stack:
        pods = {}
        for pod in ("pod-a", "pod-b"):
            stub = stack.enter_context(start_stub_runtime(*STUB_ARGS))
            router = stack.enter_context(
                start_router(
                    etcd_endpoint=etcd_server.endpoint,
                    runtime_port=stub.port,
                    root_prefix=prefix,
                    instance_id=pod,
                    env=env,
                )
            )
            pods[pod] = (router, stub)
        yield pods


def wait_for(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_routers_forward_to_each_other_over_mutual_tls(two_pods, tls: PodTls) -> None:
    credentials = tls.credentials(tls.client_cert())
    (a, stub_a), (b, stub_b) = two_pods["pod-a"], two_pods["pod-b"]
    with clients(a, credentials) as ca_, clients(b, credentials) as cb:
        register(ca_, "only-on-one")
        status = ca_.mesh.ensureLoaded(
            mm.EnsureLoadedRequest(modelId="only-on-one", sync=True), timeout=15
        )
        assert status.status == mm.ModelStatusInfo.LOADED
        holders = [p for p, (_, s) in two_pods.items() if "only-on-one" in s.stats()["loaded"]]
        assert len(holders) == 1, holders
        holder = holders[0]
        other = cb if holder == "pod-a" else ca_
        other_stub = stub_b if holder == "pod-a" else stub_a
        holder_stub = stub_a if holder == "pod-a" else stub_b
        wait_for(lambda: _peer_sees_copy(other, "only-on-one"))
        assert answer(other, "only-on-one", 9.0) == [9.0]
        assert holder_stub.stats()["infers"].get("only-on-one") == 1
        assert "only-on-one" not in other_stub.stats()["infers"]
        assert "only-on-one" not in other_stub.stats()["loads"]


def _peer_sees_copy(c: RouterClients, model_id: str) -> bool:
    status = c.mesh.getModelStatus(mm.GetStatusRequest(modelId=model_id), timeout=5)
    return any(ci.copyStatus == mm.ModelStatusInfo.LOADED for ci in status.modelCopyInfos)
