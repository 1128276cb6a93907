"""Copy scale-down and minimum copies in a three-pod mesh (real routers, stub runtimes,
real etcd), with the scale-down windows shortened through the routers' settings."""

from __future__ import annotations

import threading
import time

import grpc

from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import EtcdServer
from tests.integration.router.test_mesh import (
    PODS,
    Mesh,
    StartRouter,
    StartStub,
    copies,
    loaded_copies,
    mesh_of,
    register,
    request,
    wait_for,
)

FAST_SCALING = {
    "MM_SCALEUP_RPM_THRESHOLD": "600",
    "MM_RATECHECK_INTERVAL_MS": "500",
    "MM_SCALEDOWN_INTERVAL_SECS": "0.5",
    "MM_SCALEDOWN_MAX_FREE_PCT": "100",  # judge copies whatever the free space
    "MM_COPY_IDLE_MAX_SECS": "2",
    "MM_SECOND_COPY_MAX_GAP_SECS": "2",
    "MM_COPY_SETTLE_SECS": "1",
    "MM_COPY_UNLOAD_GAP_SECS": "1",
}


def pods_holding(mesh: Mesh, model_id: str) -> list[str]:
    """Pods whose runtime has the model loaded."""
    return [pod for pod in PODS if model_id in mesh.loaded(pod)]


class SteadyTraffic:
    """A few requests a second for one model through one pod, in a thread."""

    def __init__(self, mesh: Mesh, pod: str, model_id: str, per_s: float) -> None:
        self.mesh, self.pod, self.model_id, self.pause = mesh, pod, model_id, 1 / per_s
        self.sent, self.errors = 0, list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        with self.mesh.client(self.pod) as c:
            while not self._stop.is_set():
                try:
                    c.infer.ModelInfer(request(self.model_id), timeout=10)
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code()}: {exc.details()}")
                self.sent += 1
                self._stop.wait(self.pause)


def test_an_idle_extra_copy_is_removed_and_a_busy_one_kept(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with mesh_of(start_router, start_stub_runtime, etcd_server, env=FAST_SCALING) as m:
        time.sleep(0.5)
        with m.client("pod-a") as a:
            for model_id in ("idle", "busy"):
                register(a, model_id)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and loaded_copies(a, model_id) < 2:
                    for _ in range(20):  # well over 600 req/min on one copy
                        a.infer.ModelInfer(request(model_id), timeout=10)
                assert loaded_copies(a, model_id) >= 2, copies(a, model_id)
            # From now on only "busy" is used, at ~180 req/min: under 2/3 of the threshold.
            with SteadyTraffic(m, "pod-a", "busy", per_s=3) as busy:
                wait_for(lambda: loaded_copies(a, "idle") == 1, timeout_s=30)
                wait_for(lambda: len(pods_holding(m, "idle")) == 1, timeout_s=10)
                time.sleep(4)  # two idle windows more: the busy model keeps its copies
                assert loaded_copies(a, "busy") == 2, copies(a, "busy")
                assert len(pods_holding(m, "busy")) == 2
            assert busy.errors == [] and busy.sent > 10, busy.errors
        # The remaining copy of "idle" serves every pod's requests.
        for pod in PODS:
            with m.client(pod) as c:
                c.infer.ModelInfer(request("idle"), timeout=10)
        assert len(pods_holding(m, "idle")) == 1
        logs = [m.routers[pod].log.read_text() for pod in PODS]
        assert any("model idle: removing this idle extra copy" in log for log in logs)


def test_minimum_copies_survive_a_burst_that_evicts_everything_else(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_REAP_GRACE_SECS": "0.4"}  # the leader adds missing minimum copies at once
    with (
        mesh_of(start_router, start_stub_runtime, etcd_server, env=env) as m,
        m.client("pod-b") as b,
    ):
        b.mesh.registerModel(
            mm.RegisterModelRequest(modelId="pinned", modelInfo=mm.ModelInfo(type="stub")),
            metadata=[("mm-min-copies", "2")],
            timeout=10,
        )
        wait_for(lambda: len(pods_holding(m, "pinned")) == 2, timeout_s=15)
        time.sleep(1.5)  # "pinned" is now older than every model of the burst
        for i in range(15):  # five times what the free slots hold: every pod evicts
            register(b, f"filler-{i}")
            b.infer.ModelInfer(request(f"filler-{i}"), timeout=10)
            assert len(pods_holding(m, "pinned")) >= 2, i
        unloads = sum(sum(m.stubs[pod].stats()["unloads"].values()) for pod in PODS)
        assert unloads >= 15 - 7, unloads  # the burst did evict: 7 slots were left for it
        # (A pod whose 2 s lease lapses under load may briefly look gone to the leader, which
        # then adds a third copy: never fewer than 2 is the promise.)
        assert loaded_copies(b, "pinned") >= 2
