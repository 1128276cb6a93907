"""The registry follows reality: routers restarted under the same instance id, stale copy
claims, a runtime that lost its models, and new InferenceServices loaded with no request.

Two router pods, each with its own stub runtime, over one real etcd. Records are written
straight to etcd where the operator (or a crashed router) would have left them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.core.records import ModelRecord, VModelRecord
from tests.fixtures.etcd import ETCDCTL_BIN, EtcdServer
from tests.fixtures.router import RouterProc, clients, router_process
from tests.fixtures.runtimes import StubRuntimeProc, stub_runtime_process

PODS = ("pod-a", "pod-b")
ENV = {"MM_INSTANCE_LEASE_TTL_SECS": "3", "MM_MIN_CHURN_AGE_MS": "0"}


def infer_request(name: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[1])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


def infer(router: RouterProc, model: str, timeout_s: float = 10) -> str:
    with clients(router) as c:
        return str(c.infer.ModelInfer(infer_request(model), timeout=timeout_s).model_name)


def model_status(router: RouterProc, model: str) -> mm.ModelStatusInfo:
    with clients(router) as c:
        resp: mm.ModelStatusInfo = c.mesh.getModelStatus(mm.GetStatusRequest(modelId=model))
        return resp


def repairs(router: RouterProc, kind: str) -> float:
    pattern = re.compile(rf'^modelmesh_registry_repairs_total\{{kind="{kind}"\}} (\S+)$', re.M)
    found = pattern.search(router.metrics())
    return float(found.group(1)) if found else 0.0


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `check()` held."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def answers(router: RouterProc, model: str) -> bool:
    try:
        return infer(router, model, timeout_s=5) == model
    except grpc.RpcError:
        return False


class Mesh:
    """Two pods; each router can be killed (SIGKILL) and started again under its id."""

    def __init__(self, tmp: Path, etcd: EtcdServer, stack: contextlib.ExitStack) -> None:
        self.tmp = tmp
        self.etcd = etcd
        self.prefix = f"/heal-{uuid.uuid4().hex[:8]}"
        self.base = f"{self.prefix}/mm/modelmesh-serving"
        self.stubs: dict[str, StubRuntimeProc] = {}
        self.routers: dict[str, RouterProc] = {}
        self._router_stacks: dict[str, contextlib.ExitStack] = {}
        self._lives = 0
        for pod in PODS:
            self.stubs[pod] = stack.enter_context(stub_runtime_process(tmp))
        for pod in PODS:
            self.start(pod)
        stack.callback(self.close)

    def start(self, pod: str) -> RouterProc:
        self._lives += 1
        life = self.tmp / f"{pod}-{self._lives}"
        life.mkdir()
        stack = contextlib.ExitStack()
        self.routers[pod] = stack.enter_context(
            router_process(
                life,
                etcd_endpoint=self.etcd.endpoint,
                runtime_port=self.stubs[pod].port,
                root_prefix=self.prefix,
                instance_id=pod,
                env=ENV,
            )
        )
        self._router_stacks[pod] = stack
        return self.routers[pod]

    def kill(self, pod: str) -> None:
        """SIGKILL the router, as the kubelet does after an OOM kill."""
        os.kill(self.routers[pod].pid, signal.SIGKILL)
        self._router_stacks.pop(pod).close()

    def close(self) -> None:
        for stack in self._router_stacks.values():
            stack.close()

    def put(self, key: str, value: bytes) -> None:
        env = {**os.environ, "ETCDCTL_API": "3"}
        cmd = [str(ETCDCTL_BIN), f"--endpoints={self.etcd.endpoint}", "put", key, value.decode()]
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=10)

    def stored(self, model: str, table: str = "registry") -> dict[str, object]:
        env = {**os.environ, "ETCDCTL_API": "3"}
        cmd = [str(ETCDCTL_BIN), f"--endpoints={self.etcd.endpoint}", "get", "--print-value-only"]
        out = subprocess.run(
            [*cmd, f"{self.base}/{table}/{model}"],
            env=env,
            check=True,
            capture_output=True,
            timeout=10,
            text=True,
        ).stdout
        found: dict[str, object] = json.loads(out)
        return found

    def claims(self, model: str) -> set[str]:
        return set(dict(self.stored(model).get("instanceIds") or {}))  # type: ignore[call-overload]

    def held_by(self, model: str) -> set[str]:
        return {pod for pod in PODS if model in self.stubs[pod].stats()["loaded"]}


@pytest.fixture
def mesh(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[Mesh]:
    with contextlib.ExitStack() as stack:
        yield Mesh(tmp_path, etcd_server, stack)


def register(router: RouterProc, model: str, key: dict[str, object] | None = None) -> None:
    info = mm.ModelInfo(type="stub", key=json.dumps(key) if key else "")
    with clients(router) as c:
        c.mesh.registerModel(mm.RegisterModelRequest(modelId=model, modelInfo=info), timeout=10)


def load_extra_copy(router: RouterProc, model: str) -> None:
    """Ask one pod to load a copy even though another pod holds one (as scale-up does)."""
    metadata = (("mm-hop", f"1;extra;{router.instance_id}"),)
    with clients(router) as c:
        c.mesh.ensureLoaded(
            mm.EnsureLoadedRequest(modelId=model, sync=True), metadata=metadata, timeout=15
        )


def test_both_routers_killed_and_restarted_under_their_ids_answer_again(mesh: Mesh) -> None:
    """The reported outage: a copy on each pod, SIGKILL `mm` of one pod, restart it, then of
    the other. Before the fix every request failed with "Nowhere available" for good."""
    a, b = mesh.routers["pod-a"], mesh.routers["pod-b"]
    register(a, "hot")
    assert infer(a, "hot") == "hot"
    (first,) = mesh.held_by("hot")
    load_extra_copy(mesh.routers[next(p for p in PODS if p != first)], "hot")
    assert mesh.claims("hot") == {"pod-a", "pod-b"} == mesh.held_by("hot")

    mesh.kill("pod-a")
    a = mesh.start("pod-a")  # its runtime is purged on start: its copy is gone
    assert answers(b, "hot")
    mesh.kill("pod-b")
    b = mesh.start("pod-b")
    restarted = time.monotonic()

    for router in (a, b):
        wait_for(lambda r=router: answers(r, "hot"), 15, f"{router.instance_id} answers")
    recovered_s = time.monotonic() - restarted
    print(f"double restart: both pods answer {recovered_s:.2f} s after the second restart")
    assert recovered_s < 15
    for _ in range(10):
        assert infer(a, "hot") == "hot" and infer(b, "hot") == "hot"
    assert mesh.claims("hot") == mesh.held_by("hot") != set()
    assert repairs(a, "startup_claim") == 1 and repairs(b, "startup_claim") == 1


def test_stale_claims_on_every_pod_are_repaired_on_first_contact(mesh: Mesh) -> None:
    """Claims that no pod backs (a crash left them) never block placement: the first
    request drops them and loads the model."""
    a, b = mesh.routers["pod-a"], mesh.routers["pod-b"]
    register(a, "ghost")
    stamp = int(time.time() * 1000)
    ghost = ModelRecord(
        model_type="stub",
        instance_ids={InstanceId(p): stamp for p in PODS},
        loaded_in={InstanceId(p): stamp for p in PODS},
    )
    mesh.put(f"{mesh.base}/registry/ghost", ghost.to_json())
    wait_for(
        lambda: all(len(model_status(r, "ghost").modelCopyInfos) == 2 for r in (a, b)),
        5,
        "both mirrors see the stale claims",
    )
    assert mesh.held_by("ghost") == set()

    assert infer(a, "ghost") == "ghost"
    assert infer(b, "ghost") == "ghost"
    assert mesh.claims("ghost") == mesh.held_by("ghost")
    assert len(mesh.held_by("ghost")) == 1
    dropped = sum(repairs(r, k) for r in (a, b) for k in ("stale_claim", "peer_stale_claim"))
    assert dropped >= 2


def test_a_runtime_that_lost_its_models_is_noticed_with_no_request_and_all_claims_go(
    mesh: Mesh, tmp_path: Path
) -> None:
    """The runtime restarts empty; its router notices within its runtime check interval
    (5 s), drops every lost copy from the registry in one step, and reloads on request."""
    a = mesh.routers["pod-a"]
    models = ("m1", "m2", "m3")
    for model in models:
        register(a, model)
    for model in models:
        assert infer(a, model) == model
    on_a = [m for m in models if mesh.held_by(m) == {"pod-a"}]
    assert len(on_a) >= 2, {m: mesh.held_by(m) for m in models}

    stub = mesh.stubs["pod-a"]
    os.kill(stub.pid, signal.SIGKILL)
    with stub_runtime_process(tmp_path, port=stub.port, stats_port=stub.stats_port):
        took = wait_for(
            lambda: all("pod-a" not in mesh.claims(m) for m in on_a), 15, "claims dropped"
        )
        assert took < 12
        assert repairs(a, "runtime_lost") == len(on_a)  # all at once, not one per request
        for model in models:
            assert infer(a, model) == model
            assert mesh.claims(model) == mesh.held_by(model) != set()


def test_a_restarted_model_server_warms_itself_while_loads_go_to_the_warm_pod(
    mesh: Mesh, tmp_path: Path
) -> None:
    """Pod A's router and model server restart; the model server's first load takes 3 s
    (MLServer starting its workers took 6-18 s in the fault matrix, and requests placed on
    the empty, restarted pod timed out behind it). Pod A says it is cold and warms its model
    server with a trial load of the model it lost, under an id nothing routes to; a model
    requested meanwhile loads on the warm pod B and answers at once, though B holds more
    models. Once warm, pod A loads in no time."""
    a, b = mesh.routers["pod-a"], mesh.routers["pod-b"]
    for model in ("hot", "fresh", "later", "b1", "b2"):
        register(a, model)
    assert infer(a, "hot") == "hot"
    assert mesh.held_by("hot") == {"pod-a"}
    for model in ("b1", "b2"):
        load_extra_copy(b, model)
    assert mesh.held_by("b1") == mesh.held_by("b2") == {"pod-b"}

    mesh.kill("pod-a")
    stub = mesh.stubs["pod-a"]
    os.kill(stub.pid, signal.SIGKILL)
    slow_start = ("--first-load-delay-ms", "3000")
    with stub_runtime_process(tmp_path, *slow_start, port=stub.port, stats_port=stub.stats_port):
        mesh.start("pod-a")
        assert mesh.stored("pod-a", "instances").get("cold") is True
        started = time.monotonic()
        assert infer(b, "fresh", timeout_s=10) == "fresh"
        answered_s = time.monotonic() - started
        print(f"a new model answered {answered_s:.2f} s after the restart, pod A cold")
        assert answered_s < 1.5
        assert mesh.held_by("fresh") == {"pod-b"}

        wait_for(lambda: "cold" not in mesh.stored("pod-a", "instances"), 10, "pod A warm")
        stats = stub.stats()
        assert stats["loads"] == {"mmesh-warmup__pod-a": 1}  # the trial load
        assert stats["loaded"] == {}  # and gone again
        assert mesh.claims("hot") == set()
        started = time.monotonic()
        assert infer(b, "later") == "later"
        assert time.monotonic() - started < 1.5
        assert mesh.held_by("later") == {"pod-a"}  # warm, and it held the fewest models


def test_a_new_inference_service_is_loaded_with_no_request(mesh: Mesh) -> None:
    a, b = mesh.routers["pod-a"], mesh.routers["pod-b"]
    model = ModelRecord(model_type="stub", auto_delete=True)
    mesh.put(f"{mesh.base}/registry/isvc__new", model.to_json())
    vmodel = VModelRecord(ModelId("isvc__new"), ModelId("isvc__new"), owner="ns")
    mesh.put(f"{mesh.base}/vmodels/isvc", vmodel.to_json())

    took = wait_for(
        lambda: model_status(b, "isvc__new").status == mm.ModelStatusInfo.LOADED,
        10,
        "the new model is loaded",
    )
    assert took < 10
    loads = sum(mesh.stubs[p].stats()["loads"].get("isvc__new", 0) for p in PODS)
    infers = sum(mesh.stubs[p].stats()["infers"].get("isvc__new", 0) for p in PODS)
    assert (loads, infers) == (1, 0)
    assert infer(a, "isvc") == "isvc__new"


def test_a_new_inference_service_that_cannot_load_reports_why_with_no_request(
    mesh: Mesh,
) -> None:
    b = mesh.routers["pod-b"]
    key = json.dumps({"stub": {"fail": "object models/missing.joblib does not exist"}})
    model = ModelRecord(model_type="stub", encoded_key=key, auto_delete=True)
    mesh.put(f"{mesh.base}/registry/bad__v1", model.to_json())
    vmodel = VModelRecord(ModelId("bad__v1"), ModelId("bad__v1"), owner="ns")
    mesh.put(f"{mesh.base}/vmodels/bad", vmodel.to_json())

    wait_for(
        lambda: model_status(b, "bad__v1").status == mm.ModelStatusInfo.LOADING_FAILED,
        10,
        "the failure is recorded",
    )
    status = model_status(b, "bad__v1")
    assert status.errors
    assert all("models/missing.joblib does not exist" in e for e in status.errors)
    # Tried on each pod once, then left alone until the failures expire.
    time.sleep(1)
    failed = sum(mesh.stubs[p].stats()["failed_loads"].get("bad__v1", 0) for p in PODS)
    assert failed == 2


def test_the_periodic_reconcile_drops_claims_nobody_backs_and_expired_failures(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """No request needed: each router compares its cache with the registry every
    MM_RECONCILE_INTERVAL_SECS and repairs its own entries."""
    env = {**ENV, "MM_RECONCILE_INTERVAL_SECS": "1", "MM_LOAD_FAILURE_EXPIRY_TIME_MS": "60000"}
    with (
        stub_runtime_process(tmp_path) as stub,
        router_process(
            tmp_path, etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env
        ) as router,
    ):
        me = InstanceId(router.instance_id)
        stamp = int(time.time() * 1000)
        base = f"{router.root_prefix}/mm/modelmesh-serving/registry"
        stale = ModelRecord(model_type="stub", instance_ids={me: stamp}, loaded_in={me: stamp})
        expired = ModelRecord(
            model_type="stub", failed_in={me: stamp - 120_000}, failures={me: "old failure"}
        )
        etcdctl = [str(ETCDCTL_BIN), f"--endpoints={etcd_server.endpoint}"]
        env_ctl = {**os.environ, "ETCDCTL_API": "3"}
        for name, record in (("stale", stale), ("expired", expired)):
            value = record.to_json().decode()
            subprocess.run(
                [*etcdctl, "put", f"{base}/{name}", value],
                env=env_ctl,
                check=True,
                capture_output=True,
                timeout=10,
            )

        def stored(name: str) -> dict[str, object]:
            out = subprocess.run(
                [*etcdctl, "get", "--print-value-only", f"{base}/{name}"],
                env=env_ctl,
                check=True,
                capture_output=True,
                timeout=10,
                text=True,
            ).stdout
            found: dict[str, object] = json.loads(out)
            return found

        def repaired() -> bool:
            return "failedIn" not in stored("expired") and "instanceIds" not in stored("stale")

        took = wait_for(repaired, 10, "the reconcile repaired both records")
        assert took < 10
        assert repairs(router, "stale_claim") == 1
        assert repairs(router, "expired_failure") == 1
        assert stub.stats()["loads"] == {}


def stored_record(etcd: EtcdServer, router: RouterProc, model: str) -> dict[str, object]:
    key = f"{router.root_prefix}/mm/modelmesh-serving/registry/{model}"
    env = {**os.environ, "ETCDCTL_API": "3"}
    cmd = [str(ETCDCTL_BIN), f"--endpoints={etcd.endpoint}", "get", "--print-value-only", key]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=10, text=True)
    found: dict[str, object] = json.loads(out.stdout)
    return found


def test_a_model_server_that_dies_mid_load_is_not_a_load_failure_of_the_model(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """The runtime is killed while it loads and comes back on the same port: the request
    waits for it and answers; no failure is written to the model's record (before the fix:
    INTERNAL "failed to load ... runtime unavailable", remembered for the failure expiry)."""
    key = {"stub": {"delay_ms": 3000}}
    with (
        stub_runtime_process(tmp_path) as stub,
        router_process(
            tmp_path, etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=ENV
        ) as router,
    ):
        register(router, "slow", key)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(infer, router, "slow", 40)
            wait_for(
                lambda: model_status(router, "slow").status == mm.ModelStatusInfo.LOADING,
                10,
                "the load started",
            )
            time.sleep(0.5)
            os.kill(stub.pid, signal.SIGKILL)
            killed = time.monotonic()
            with stub_runtime_process(tmp_path, port=stub.port, stats_port=stub.stats_port):
                assert pending.result(timeout=45) == "slow"
                took = time.monotonic() - killed
                print(f"runtime killed mid-load: answered {took:.2f} s after the kill")
                record = stored_record(etcd_server, router, "slow")
                assert "failures" not in record and "failedIn" not in record, record
                assert model_status(router, "slow").status == mm.ModelStatusInfo.LOADED
                assert infer(router, "slow") == "slow"


def test_nowhere_to_load_while_the_only_runtime_restarts_waits_instead_of_refusing(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    """The only instance's runtime is down when a cold request arrives: the request waits
    (within its deadline) for somewhere to load, instead of RESOURCE_EXHAUSTED "Nowhere
    available to load" at once."""
    with (
        stub_runtime_process(tmp_path) as stub,
        router_process(
            tmp_path, etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=ENV
        ) as router,
    ):
        register(router, "cold")
        os.kill(stub.pid, signal.SIGKILL)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(infer, router, "cold", 40)
            time.sleep(2)
            assert not pending.done(), pending.exception()
            with stub_runtime_process(tmp_path, port=stub.port, stats_port=stub.stats_port):
                assert pending.result(timeout=45) == "cold"
        assert "failures" not in stored_record(etcd_server, router, "cold")


def test_a_call_to_a_peer_that_stops_answering_goes_elsewhere_before_the_deadline(
    mesh: Mesh,
) -> None:
    """The peer holding the only copy hangs (SIGSTOP: its connections stay open, nothing
    answers). As soon as its lease expires (3 s here) the sender gives up on it and loads
    the model itself, long before the client's 15 s deadline (before the fix the call sat
    on the dead peer until the deadline)."""
    a, b = mesh.routers["pod-a"], mesh.routers["pod-b"]
    register(a, "held")
    assert infer(a, "held") == "held"
    assert infer(b, "held") == "held"  # forwarded: pod-b has an open channel to pod-a
    assert mesh.held_by("held") == {"pod-a"}
    os.kill(a.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert infer(b, "held", timeout_s=15) == "held"
        took = time.monotonic() - started
        print(f"peer hung: answered by the other pod after {took:.2f} s")
        assert took < 10
        assert "pod-b" in mesh.held_by("held")
    finally:
        os.kill(a.pid, signal.SIGCONT)
