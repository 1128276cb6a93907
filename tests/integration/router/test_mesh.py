"""Three router pods, each with its own stub runtime, as one mesh over one etcd."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
PODS = ("pod-a", "pod-b", "pod-c")
StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


def request(name: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[1])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


def register(c: RouterClients, model_id: str) -> None:
    c.mesh.registerModel(
        mm.RegisterModelRequest(modelId=model_id, modelInfo=mm.ModelInfo(type="stub")), timeout=10
    )


def wait_for(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


class Mesh:
    def __init__(self, routers: dict[str, RouterProc], stubs: dict[str, StubRuntimeProc]):
        self.routers = routers
        self.stubs = stubs

    @contextlib.contextmanager
    def client(self, pod: str) -> Iterator[RouterClients]:
        with clients(self.routers[pod]) as c:
            yield c

    def loads(self, pod: str) -> dict[str, int]:
        return dict(self.stubs[pod].stats()["loads"])

    def infers(self, pod: str) -> dict[str, int]:
        return dict(self.stubs[pod].stats()["infers"])

    def loaded(self, pod: str) -> dict[str, int]:
        return dict(self.stubs[pod].stats()["loaded"])


@contextlib.contextmanager
def mesh_of(
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd: EtcdServer,
    *,
    stub_args: dict[str, tuple[str, ...]] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Mesh]:
    prefix = f"/mesh-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        stubs, routers = {}, {}
        for pod in PODS:
            args = (
                "--capacity-bytes",
                str(12 * MIB),
                "--size-bytes",
                str(4 * MIB),
                "--default-size-bytes",
                str(MIB),
                *((stub_args or {}).get(pod, ())),
            )
            stubs[pod] = stack.enter_context(start_stub_runtime(*args))
            routers[pod] = stack.enter_context(
                start_router(
                    etcd_endpoint=etcd.endpoint,
                    runtime_port=stubs[pod].port,
                    root_prefix=prefix,
                    instance_id=pod,
                    env={
                        "MM_MIN_CHURN_AGE_MS": "0",
                        "MM_INSTANCE_LEASE_TTL_SECS": "2",
                        **(env or {}),
                    },
                )
            )
        mesh = Mesh(routers, stubs)
        with mesh.client("pod-a") as c:
            wait_for(lambda: all(_knows_peers(mesh, pod) for pod in PODS))
            del c
        yield mesh


def _knows_peers(mesh: Mesh, pod: str) -> bool:
    metrics = mesh.routers[pod].metrics()
    return "modelmesh_instance_capacity_bytes" in metrics


@pytest.fixture
def mesh(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Iterator[Mesh]:
    with mesh_of(start_router, start_stub_runtime, etcd_server) as m:
        time.sleep(0.5)  # instance records published and mirrored everywhere
        yield m


def holder_of(mesh: Mesh, model_id: str) -> str:
    holders = [pod for pod in PODS if model_id in mesh.loaded(pod)]
    assert len(holders) == 1, holders
    return holders[0]


def test_request_on_any_pod_reaches_the_pod_holding_the_model(mesh: Mesh) -> None:
    with mesh.client("pod-b") as b:
        register(b, "one-copy")
        status = b.mesh.ensureLoaded(
            mm.EnsureLoadedRequest(modelId="one-copy", sync=True), timeout=10
        )
    assert status.status == mm.ModelStatusInfo.LOADED
    holder = holder_of(mesh, "one-copy")
    others = [pod for pod in PODS if pod != holder]
    for pod in others:
        with mesh.client(pod) as c:
            for _ in range(5):
                answer = c.infer.ModelInfer(request("one-copy"), timeout=10)
                assert answer.model_name == "one-copy"
    assert mesh.infers(holder) == {"one-copy": 10}
    assert all(mesh.loads(pod) == {} for pod in others)


def test_three_times_the_capacity_zipf_traffic_all_answered_within_capacity(mesh: Mesh) -> None:
    models = [f"z{i:02d}" for i in range(18)]  # the mesh holds 9 (3 per pod)
    with mesh.client("pod-a") as a:
        for m in models:
            register(a, m)
    rng = random.Random(42)
    weights = [1 / (rank + 1) for rank in range(len(models))]
    trace = rng.choices(models, weights=weights, k=150)
    clients_by_pod = {pod: contextlib.ExitStack() for pod in PODS}
    try:
        cs = {pod: clients_by_pod[pod].enter_context(mesh.client(pod)) for pod in PODS}
        for i, m in enumerate(trace):
            pod = PODS[i % 3]
            assert cs[pod].infer.ModelInfer(request(m), timeout=20).model_name == m
    finally:
        for stack in clients_by_pod.values():
            stack.close()
    for pod in PODS:
        wait_for(lambda pod=pod: sum(mesh.loaded(pod).values()) <= 12 * MIB)
    recent = list(dict.fromkeys(reversed(trace)))[:3]
    everywhere = set().union(*(mesh.loaded(pod) for pod in PODS))
    assert set(recent) <= everywhere, "the most recently used models must still be loaded"
    loads = sum(sum(mesh.loads(pod).values()) for pod in PODS)
    assert loads >= len(set(trace)), "every distinct model was loaded somewhere"


def test_killed_pod_models_are_reloaded_elsewhere_and_registrations_stay(mesh: Mesh) -> None:
    with mesh.client("pod-a") as a:
        for m in ("k1", "k2"):
            register(a, m)
            a.infer.ModelInfer(request(m), timeout=10)
    victim = holder_of(mesh, "k1")
    ingress = next(pod for pod in PODS if pod != victim)
    errors: list[grpc.RpcError] = []
    answered = 0
    os.kill(mesh.routers[victim].pid, signal.SIGKILL)
    with mesh.client(ingress) as c:
        deadline = time.monotonic() + 4  # past the 2 s lease
        while time.monotonic() < deadline:
            for m in ("k1", "k2"):
                try:
                    assert c.infer.ModelInfer(request(m), timeout=10).model_name == m
                    answered += 1
                except grpc.RpcError as exc:
                    errors.append(exc)
        statuses = {
            m: c.mesh.getModelStatus(mm.GetStatusRequest(modelId=m)).status for m in ("k1", "k2")
        }
    print(f"during the lease expiry window: {answered} answered, {len(errors)} failed")
    assert errors == []
    assert statuses == {"k1": mm.ModelStatusInfo.LOADED, "k2": mm.ModelStatusInfo.LOADED}
    survivors = [pod for pod in PODS if pod != victim]
    assert {"k1", "k2"} <= set().union(*(mesh.loaded(pod) for pod in survivors))


def test_model_failing_on_two_pods_loads_on_the_third(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    bad = ("--fail-pattern", "^picky$")
    with mesh_of(
        start_router, start_stub_runtime, etcd_server, stub_args={"pod-a": bad, "pod-b": bad}
    ) as m:
        time.sleep(0.5)
        with m.client("pod-a") as a:
            register(a, "picky")
            assert a.infer.ModelInfer(request("picky"), timeout=20).model_name == "picky"
            status = a.mesh.getModelStatus(mm.GetStatusRequest(modelId="picky"))
        assert status.status == mm.ModelStatusInfo.LOADED
        assert "picky" in m.loaded("pod-c")
        assert sum(m.loads("pod-a").values()) + sum(m.loads("pod-b").values()) <= 2


def test_model_failing_everywhere_reports_every_pod_and_does_not_loop(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    bad = ("--fail-pattern", "^doomed$")
    with mesh_of(
        start_router, start_stub_runtime, etcd_server, stub_args={pod: bad for pod in PODS}
    ) as m:
        time.sleep(0.5)
        with m.client("pod-a") as a:
            register(a, "doomed")
            with pytest.raises(grpc.RpcError) as err:
                a.infer.ModelInfer(request("doomed"), timeout=30)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            for pod in PODS:
                assert pod in (err.value.details() or "")
            status = a.mesh.getModelStatus(mm.GetStatusRequest(modelId="doomed"))
        assert status.status == mm.ModelStatusInfo.LOADING_FAILED
        assert len(status.errors) == 3
        assert {ci.location for ci in status.modelCopyInfos} == set(PODS)
        assert [m.loads(pod).get("doomed") for pod in PODS] == [1, 1, 1]


def test_many_concurrent_first_requests_across_pods_all_answered(mesh: Mesh) -> None:
    with mesh.client("pod-a") as a:
        register(a, "hot")
    results: list[str] = []
    errors: list[Exception] = []

    def hit(pod: str) -> None:
        with mesh.client(pod) as c:
            for _ in range(10):
                try:
                    results.append(c.infer.ModelInfer(request("hot"), timeout=20).model_name)
                except grpc.RpcError as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=hit, args=(pod,)) for pod in PODS for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == ["hot"] * 90
    total_loads = sum(mesh.loads(pod).get("hot", 0) for pod in PODS)
    print(f"copies loaded for 9 concurrent first callers on 3 pods: {total_loads}")
    assert 1 <= total_loads <= 3


def loaded_copies(c: RouterClients, model_id: str) -> int:
    return sum(1 for state in copies(c, model_id).values() if state == mm.ModelStatusInfo.LOADED)


def copies(c: RouterClients, model_id: str) -> dict[str, int]:
    status = c.mesh.getModelStatus(mm.GetStatusRequest(modelId=model_id))
    return {ci.location: ci.copyStatus for ci in status.modelCopyInfos}


def test_high_request_rate_adds_a_copy_on_another_pod(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    # LRU: under the value policy a model used this often outweighs one-off fillers for a
    # minute (that is its point), and this test's second half wants the idle copies to go
    env = {
        "MM_SCALEUP_RPM_THRESHOLD": "600",
        "MM_RATECHECK_INTERVAL_MS": "500",
        "MM_EVICTION_POLICY": "lru",
    }
    with mesh_of(start_router, start_stub_runtime, etcd_server, env=env) as m:
        time.sleep(0.5)
        with m.client("pod-a") as a:
            register(a, "busy")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and loaded_copies(a, "busy") < 2:
                for _ in range(20):  # well over 600 req/min
                    a.infer.ModelInfer(request("busy"), timeout=10)
            loaded = [
                pod
                for pod, state in copies(a, "busy").items()
                if state == mm.ModelStatusInfo.LOADED
            ]
        assert len(loaded) >= 2, loaded
        assert sum(1 for pod in PODS if "busy" in m.loaded(pod)) >= 2
        # The rate falls to nothing; other models need the space: the idle copies go.
        time.sleep(1.0)  # let a scale-up decided in the last rate window finish loading
        with m.client("pod-b") as b:
            for i in range(15):  # more than the mesh holds: every pod needs its space
                register(b, f"filler-{i}")
                b.infer.ModelInfer(request(f"filler-{i}"), timeout=10)
                time.sleep(0.02)
            wait_for(lambda: len(copies(b, "busy")) < 2, timeout_s=30)


def test_copies_of_a_dead_pod_leave_the_registry(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with mesh_of(
        start_router, start_stub_runtime, etcd_server, env={"MM_REAP_GRACE_SECS": "1"}
    ) as m:
        time.sleep(0.5)
        with m.client("pod-a") as a:
            register(a, "orphan")
            a.infer.ModelInfer(request("orphan"), timeout=10)
            victim = holder_of(m, "orphan")
            os.kill(m.routers[victim].pid, signal.SIGKILL)
            survivor = next(pod for pod in PODS if pod != victim)
        with m.client(survivor) as c:
            wait_for(lambda: victim not in copies(c, "orphan"), timeout_s=15)
            assert c.mesh.getModelStatus(mm.GetStatusRequest(modelId="orphan")).status == (
                mm.ModelStatusInfo.NOT_LOADED
            )


def test_rolling_restart_under_load_fails_no_request(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    prefix = f"/roll-{uuid.uuid4().hex[:8]}"
    env = {"MM_MIN_CHURN_AGE_MS": "0", "MM_INSTANCE_LEASE_TTL_SECS": "2"}
    models = [f"r{i}" for i in range(4)]
    with contextlib.ExitStack() as stubs_stack:
        stubs = {pod: stubs_stack.enter_context(start_stub_runtime()) for pod in PODS}
        stacks = {pod: contextlib.ExitStack() for pod in PODS}

        def start(pod: str) -> RouterProc:
            return stacks[pod].enter_context(
                start_router(
                    etcd_endpoint=etcd_server.endpoint,
                    runtime_port=stubs[pod].port,
                    root_prefix=prefix,
                    instance_id=pod,
                    env=env,
                )
            )

        routers = {pod: start(pod) for pod in PODS}
        try:
            time.sleep(0.5)
            with clients(routers["pod-a"]) as a:
                for m in models:
                    register(a, m)
                    a.infer.ModelInfer(request(m), timeout=10)
            ingress = {"pod": "pod-c"}
            errors: list[Exception] = []
            answered = [0]
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    pod = ingress["pod"]
                    with clients(routers[pod]) as c:
                        for m in models:
                            try:
                                assert c.infer.ModelInfer(request(m), timeout=20).model_name == m
                                answered[0] += 1
                            except grpc.RpcError as exc:
                                errors.append(exc)

            worker = threading.Thread(target=traffic)
            worker.start()
            for pod in PODS:
                ingress["pod"] = next(p for p in PODS if p != pod)
                time.sleep(0.3)
                os.kill(routers[pod].pid, signal.SIGTERM)
                wait_for(lambda pod=pod: not _alive(routers[pod].pid), timeout_s=20)
                stacks[pod].close()
                routers[pod] = start(pod)
            time.sleep(0.5)
            stop.set()
            worker.join()
        finally:
            for stack in stacks.values():
                stack.close()
    print(f"rolling restart: {answered[0]} answered, {len(errors)} failed")
    assert errors == [] and answered[0] > 0


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


def leader_of(etcd: EtcdServer, mesh: Mesh) -> str | None:
    prefix = mesh.routers["pod-a"].root_prefix
    out = subprocess.run(
        [
            "/usr/bin/etcdctl",
            f"--endpoints={etcd.endpoint}",
            "get",
            "--print-value-only",
            f"{prefix}/mm/modelmesh-serving/leader",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    ).stdout.strip()
    return out or None


def test_one_leader_and_another_takes_over_when_it_dies(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with mesh_of(
        start_router, start_stub_runtime, etcd_server, env={"MM_REAP_GRACE_SECS": "0.4"}
    ) as m:
        wait_for(lambda: leader_of(etcd_server, m) in PODS)
        first = leader_of(etcd_server, m)
        assert first is not None
        os.kill(m.routers[first].pid, signal.SIGKILL)
        wait_for(lambda: leader_of(etcd_server, m) not in (None, first), timeout_s=15)
        assert leader_of(etcd_server, m) in set(PODS) - {first}


def test_minimum_copies_are_kept_without_traffic(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        mesh_of(
            start_router, start_stub_runtime, etcd_server, env={"MM_REAP_GRACE_SECS": "0.4"}
        ) as m,
        m.client("pod-a") as a,
    ):
        a.mesh.registerModel(
            mm.RegisterModelRequest(modelId="pinned", modelInfo=mm.ModelInfo(type="stub")),
            metadata=[("mm-min-copies", "2")],
            timeout=10,
        )
        wait_for(lambda: sum(1 for pod in PODS if "pinned" in m.loaded(pod)) == 2, timeout_s=15)
        time.sleep(1)  # and not more than asked for
        assert sum(1 for pod in PODS if "pinned" in m.loaded(pod)) == 2
        with pytest.raises(grpc.RpcError) as err:
            a.mesh.registerModel(
                mm.RegisterModelRequest(modelId="bad", modelInfo=mm.ModelInfo(type="stub")),
                metadata=[("mm-min-copies", "two")],
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_in_steady_use_gets_a_second_copy(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_SECOND_COPY_MIN_AGE_SECS": "1", "MM_RATECHECK_INTERVAL_MS": "300"}
    with (
        mesh_of(start_router, start_stub_runtime, etcd_server, env=env) as m,
        m.client("pod-a") as a,
    ):
        register(a, "steady")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and loaded_copies(a, "steady") < 2:
            a.infer.ModelInfer(request("steady"), timeout=10)  # a few per second: not busy
            time.sleep(0.1)
        assert sum(1 for pod in PODS if "steady" in m.loaded(pod)) == 2


def test_recently_used_model_is_loaded_into_free_space_before_any_request(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        mesh_of(
            start_router, start_stub_runtime, etcd_server, env={"MM_REAP_GRACE_SECS": "0.4"}
        ) as m,
        m.client("pod-a") as a,
    ):
        a.mesh.registerModel(
            mm.RegisterModelRequest(
                modelId="warm-up",
                modelInfo=mm.ModelInfo(type="stub"),
                lastUsedTime=int(time.time() * 1000),
            ),
            timeout=10,
        )
        a.mesh.registerModel(
            mm.RegisterModelRequest(modelId="long-ago", modelInfo=mm.ModelInfo(type="stub")),
            timeout=10,
        )
        wait_for(lambda: any("warm-up" in m.loaded(pod) for pod in PODS), timeout_s=15)
        assert not any("long-ago" in m.loaded(pod) for pod in PODS)


def test_copies_spread_over_zones(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    prefix = f"/zones-{uuid.uuid4().hex[:8]}"
    zones = {"pod-a": "zone-1", "pod-b": "zone-1", "pod-c": "zone-2"}
    with contextlib.ExitStack() as stack:
        routers = {}
        for pod, zone in zones.items():
            stub = stack.enter_context(start_stub_runtime())
            routers[pod] = stack.enter_context(
                start_router(
                    etcd_endpoint=etcd_server.endpoint,
                    runtime_port=stub.port,
                    root_prefix=prefix,
                    instance_id=pod,
                    env={"MM_ZONE": zone, "MM_REAP_GRACE_SECS": "0.4"},
                )
            )
        time.sleep(0.5)
        with clients(routers["pod-a"]) as a:
            for i in range(4):
                a.mesh.registerModel(
                    mm.RegisterModelRequest(modelId=f"ha-{i}", modelInfo=mm.ModelInfo(type="stub")),
                    metadata=[("mm-min-copies", "2")],
                    timeout=10,
                )
            for i in range(4):
                wait_for(lambda i=i: loaded_copies(a, f"ha-{i}") == 2, timeout_s=15)
                holders = set(copies(a, f"ha-{i}"))
                assert {zones[p] for p in holders} == {"zone-1", "zone-2"}, holders


def test_prestop_returns_once_recent_models_have_moved(mesh: Mesh) -> None:
    with mesh.client("pod-a") as a:
        register(a, "mover")
        a.infer.ModelInfer(request("mover"), timeout=10)
    leaving = holder_of(mesh, "mover")
    url = f"http://127.0.0.1:{mesh.routers[leaving].prestop_port}/prestop"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
    moved_to = [pod for pod in PODS if pod != leaving and "mover" in mesh.loaded(pod)]
    assert moved_to, "the model had no copy elsewhere when /prestop answered"
    wait_for(lambda: not _alive(mesh.routers[leaving].pid), timeout_s=15)
