"""The router when etcd goes away and comes back, and when it is told to stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import ETCDCTL_BIN, EtcdServer, RestartableEtcd
from tests.fixtures.router import RouterProc, clients, router_process
from tests.fixtures.runtimes import StubRuntimeProc

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


def request(name: str) -> v2.ModelInferRequest:
    return v2.ModelInferRequest(
        model_name=name,
        inputs=[
            v2.ModelInferRequest.InferInputTensor(
                name="x",
                datatype="FP32",
                shape=[1],
                contents=v2.InferTensorContents(fp32_contents=[1]),
            )
        ],
    )


def etcd_keys(endpoint: str, prefix: str) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [str(ETCDCTL_BIN), f"--endpoints={endpoint}", "get", "--prefix", prefix],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    ).stdout.splitlines()
    pairs = {out[i]: out[i + 1] for i in range(0, len(out) - 1, 2)}
    return {k: json.loads(v) for k, v in pairs.items() if not k.endswith("/leader")}


def test_a_router_started_while_etcd_is_down_waits_for_it_and_serves(
    tmp_path: Path, start_router: StartRouter, start_stub_runtime: StartStub
) -> None:
    """A new pod scheduled during an etcd restart: the router used to exit with a traceback
    and, on a real kubelet, wait out a growing restart back-off after etcd was back."""
    with RestartableEtcd(tmp_path) as restartable:
        later = threading.Timer(3.0, restartable.start)
        later.start()
        try:
            with (
                start_stub_runtime() as stub,
                start_router(
                    etcd_endpoint=f"127.0.0.1:{restartable.client_port}", runtime_port=stub.port
                ) as router,
                clients(router) as c,
            ):
                c.mesh.registerModel(
                    mm.RegisterModelRequest(modelId="m", modelInfo=mm.ModelInfo(type="stub")),
                    timeout=10,
                )
                assert c.infer.ModelInfer(request("m"), timeout=10).model_name == "m"
                log = router.log.read_text()
                assert "etcd does not answer at start" in log
                assert "Traceback" not in log
        finally:
            later.join()


def test_a_request_waits_while_every_pod_that_may_serve_its_model_restarts(
    tmp_path: Path, etcd_server: EtcdServer, start_stub_runtime: StartStub
) -> None:
    """The fault matrix's "every mm at once": while the only pod whose labels fit the model
    restarts, its instance record expires and no live instance may load the model. Pod A
    used to answer RESOURCE_EXHAUSTED ("no running instances that meet the label
    requirements") at once; now the request waits for the pod to come back, within its
    deadline."""
    prefix = f"/back-{uuid.uuid4().hex[:8]}"
    record_b = f"{prefix}/mm/modelmesh-serving/instances/pod-b"
    ttl = {"MM_INSTANCE_LEASE_TTL_SECS": "3"}
    with contextlib.ExitStack() as stack:
        stub_a, stub_b = (
            stack.enter_context(start_stub_runtime()),
            stack.enter_context(start_stub_runtime()),
        )

        def start(pod: str, stub: StubRuntimeProc, labels: str) -> RouterProc:
            life = tmp_path / f"{pod}-{time.monotonic_ns()}"
            life.mkdir()
            return stack.enter_context(
                router_process(
                    life,
                    etcd_endpoint=etcd_server.endpoint,
                    runtime_port=stub.port,
                    root_prefix=prefix,
                    instance_id=pod,
                    env={**ttl, "MM_LABELS": labels},
                )
            )

        a = start("pod-a", stub_a, "rt:a")
        b = start("pod-b", stub_b, "rt:b")
        with clients(a) as c:
            info = mm.ModelInfo(type="rt:b")
            c.mesh.registerModel(mm.RegisterModelRequest(modelId="m", modelInfo=info), timeout=10)
            assert c.infer.ModelInfer(request("m"), timeout=10).model_name == "m"
            assert "m" in stub_b.stats()["loaded"]

            os.kill(b.pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while record_b in etcd_keys(etcd_server.endpoint, record_b):
                assert time.monotonic() < deadline, "pod B's record never expired"
                time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as short:  # a deadline too short to wait it out
                c.infer.ModelInfer(request("m"), timeout=2)
            assert short.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "left within the last 60 s and are not back: pod-b" in str(short.value.details())
            comeback = threading.Timer(3.0, lambda: start("pod-b", stub_b, "rt:b"))
            comeback.start()
            try:
                sent = time.monotonic()
                assert c.infer.ModelInfer(request("m"), timeout=30).model_name == "m"
                waited = time.monotonic() - sent
            finally:
                comeback.join()
        print(f"answered {waited:.1f} s later, once pod B was back")
        assert waited > 2.5
        assert "m" in stub_b.stats()["loaded"]


def test_warm_requests_survive_an_etcd_restart_and_registrations_stay(
    tmp_path: Path, start_router: StartRouter, start_stub_runtime: StartStub
) -> None:
    with RestartableEtcd(tmp_path) as restartable:
        etcd = restartable.start()
        with (
            start_stub_runtime() as stub,
            start_router(etcd_endpoint=etcd.endpoint, runtime_port=stub.port) as router,
            clients(router) as c,
        ):
            c.mesh.registerModel(
                mm.RegisterModelRequest(modelId="steady", modelInfo=mm.ModelInfo(type="stub")),
                timeout=10,
            )
            assert c.infer.ModelInfer(request("steady"), timeout=10).model_name == "steady"

            restartable.stop()  # etcd is gone
            for _ in range(50):
                assert c.infer.ModelInfer(request("steady"), timeout=10).model_name == "steady"

            restartable.start()
            assert c.infer.ModelInfer(request("steady"), timeout=10).model_name == "steady"
            deadline = time.monotonic() + 20
            while True:
                try:
                    c.mesh.registerModel(
                        mm.RegisterModelRequest(
                            modelId="after-restart", modelInfo=mm.ModelInfo(type="stub")
                        ),
                        timeout=5,
                    )
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "router never wrote to etcd again"
                    time.sleep(0.2)
            assert c.mesh.getModelStatus(mm.GetStatusRequest(modelId="steady")).status == (
                mm.ModelStatusInfo.LOADED
            )
            assert c.infer.ModelInfer(request("after-restart"), timeout=10).model_name == (
                "after-restart"
            )


def test_cold_models_load_and_answer_while_etcd_is_away_and_are_recorded_when_it_returns(
    tmp_path: Path, start_router: StartRouter, start_stub_runtime: StartStub
) -> None:
    """An etcd outage used to fail every request for a model not loaded yet ("cannot load:
    the registry (etcd) is unavailable"), for as long as the outage lasted."""
    cold = ("cold-1", "cold-2")
    with RestartableEtcd(tmp_path) as restartable:
        etcd = restartable.start()
        with (
            start_stub_runtime() as stub,
            start_router(etcd_endpoint=etcd.endpoint, runtime_port=stub.port) as router,
            clients(router) as c,
        ):
            for model_id in cold:
                info = mm.ModelInfo(type="stub", path=f"/models/{model_id}")
                c.mesh.registerModel(
                    mm.RegisterModelRequest(modelId=model_id, modelInfo=info), timeout=10
                )
            assert not stub.stats()["loaded"]
            base = f"{router.root_prefix}/mm/modelmesh-serving/registry/"

            restartable.stop()  # etcd is gone
            for model_id in cold:
                started = time.monotonic()
                assert c.infer.ModelInfer(request(model_id), timeout=10).model_name == model_id
                assert time.monotonic() - started < 5
            assert sorted(stub.stats()["loaded"]) == list(cold)
            for model_id in cold:  # and warm from then on
                assert c.infer.ModelInfer(request(model_id), timeout=10).model_name == model_id
            log = router.log.read_text()
            assert "etcd is unavailable" in log and "loading cold-1 without recording it" in log

            etcd = restartable.start()
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(subprocess.CalledProcessError):
                    keys = etcd_keys(etcd.endpoint, base)
                    holders = [keys.get(base + m, {}).get("loadedIn", {}) for m in cold]
                    if all(router.instance_id in h for h in holders):
                        break
                assert time.monotonic() < deadline, f"copies never recorded: {holders}"
                time.sleep(0.2)
            for model_id in cold:
                status = c.mesh.getModelStatus(mm.GetStatusRequest(modelId=model_id))
                assert status.status == mm.ModelStatusInfo.LOADED
            assert stub.stats()["loads"] == {m: 1 for m in cold}


def test_sigterm_unloads_deregisters_and_exits(
    tmp_path: Path,
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd_server: EtcdServer,
) -> None:
    with (
        start_stub_runtime() as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as router,
    ):
        with clients(router) as c:
            c.mesh.registerModel(
                mm.RegisterModelRequest(modelId="resident", modelInfo=mm.ModelInfo(type="stub")),
                timeout=10,
            )
            c.infer.ModelInfer(request("resident"), timeout=10)
        base = f"{router.root_prefix}/mm/modelmesh-serving/"
        before = etcd_keys(etcd_server.endpoint, base)
        assert f"{base}instances/{router.instance_id}" in before
        assert router.instance_id in before[f"{base}registry/resident"]["instanceIds"]

        os.kill(router.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(router.pid):
            time.sleep(0.1)
        assert not _alive(router.pid), "router did not exit after SIGTERM"

        after = etcd_keys(etcd_server.endpoint, base)
        assert f"{base}instances/{router.instance_id}" not in after
        assert after[f"{base}registry/resident"].get("instanceIds", {}) == {}
        assert stub.stats()["unloads"] == {"resident": 1}
        assert "router stopped" in router.log.read_text()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0
