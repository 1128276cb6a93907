"""The fault matrix of issue 11, seen by a user: every ordinary fault heals, nothing lies.

One local cluster serves two workloads at once, each driven by 4 closed-loop clients sending
the tutorial's ModelInfer through the forwarded 8033:

- `tutorial`: the tutorial's InferenceService on the 2 pods of `mlserver-1.x`;
- `mix`: 10 InferenceServices on the 2 pods of `mlserver-small`, whose caches hold 4 copies
  in all (test_mesh's sizing): each client sends 2 hot models and one of the 8 cold ones in
  turn, so copies are loaded and evicted all the time.

Each case applies one fault to both runtimes at once (one pod of each, the pod holding the
most copies): SIGKILL `mm`; `mm` of every pod in turn, 10 s apart; the model server; the
adapter; all containers of a pod; `kubectl delete pod`; etcd killed and started again on its
data 6 s later; the operator killed. Then faults in a row, where one fault lands while the
mesh is still healing from the one before: `mm` killed again while it starts; `mm` killed while
etcd is down; the model server killed and its `mm` a second later; every `mm` of both runtimes
at once; etcd restarted twice, 3 s apart. It records, per workload: the longest time with no
successful answer, the failed requests, when the last one failed, and how long until the
InferenceService status is true again: READY True, every copy the registry claims really held
by that pod's model server (V2 RepositoryIndex, asked before and after the records are read),
Loaded only for a model with a copy, and for the tutorial totalCopies equal to the registry's
copies. Copies a model server holds that no record claims are reported as orphans.
It asserts that the model answers again within 15 s of the fault and no request
fails after that, that the status is true again soon after, and that no registration is lost;
with etcd down, warm requests never stop and cold models still load, so no request fails.
The table of figures is printed at the end and written to `$MMESH_FAULT_RESULTS` (a JSON file;
the pytest temp folder without it).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.e2e.test_mesh import (
    RUNTIME as MIX_RUNTIME,
)
from tests.e2e.test_mesh import (
    SIZE_MULTIPLIER,
    Sizing,
    churn_guard_off,
    deployment_env,
    isvc_manifest,
    small_runtime,
    upload_copies,
)
from tests.fixtures.cluster import (
    EXAMPLES,
    Cluster,
    answered_digit,
    etcd_values,
    inference_request,
    pod_row,
    runtime_pods,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        os.environ.get("MMESH_FAULT_MATRIX") != "1",
        reason="the fault matrix takes about 5 minutes: MMESH_FAULT_MATRIX=1 scripts/test "
        "tests/e2e/test_faults.py runs it",
    ),
]

TUTORIAL = "example-sklearn-isvc"
TUTORIAL_RUNTIME = "mlserver-1.x"
MIX = [f"fault-mix-{i}" for i in range(10)]
HOT = MIX[:2]
COLD = MIX[2:]
MESH = "modelmesh-serving/mm/modelmesh-serving/"
INFER = "/inference.GRPCInferenceService/ModelInfer"
REPOSITORY_INDEX = "/inference.GRPCInferenceService/RepositoryIndex"
MODEL_SERVER_PORT = 8001
CLIENTS = 4
THINK_S = 0.02
"""Between an answer and the next request: 8 clients with none would keep the 2-core test
machine (and the Python port-forward) saturated, which is not the fault under test."""
FAILED_PAUSE_S = 0.1
REQUEST_TIMEOUT_S = 15.0
ANSWER_WITHIN_S = 15.0
"""The model answers again within this long of the fault, and no request fails after."""
LAG_S = 10.0
"""How long the status may show what was true a moment ago (loads and evictions included)."""
STATUS_WITHIN_S = 25.0
"""The status is true again within this long of the fault (repair, then <= 10 s to show)."""
QUIET_S = 4.0
"""A case ends after this long with answers and no failure, and a true status."""
CASE_LIMIT_S = 60.0
POLL_S = 1.5
"""Between two looks at the status (each is a kubectl get, an etcd read and a
RepositoryIndex per pod; the emulated API is one Python process)."""
ETCD_DOWN_S = 6.0
TURN_S = 10.0
STARTING_S = 1.0
"""How long after its restart `mm` is killed again: it is starting, not yet ready."""


# ---------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Outcome:
    sent: float
    done: float
    ok: bool
    detail: str = ""
    wall: float = field(default_factory=time.time)


class Load:
    """CLIENTS closed-loop clients, each on its own channel, each walking its own sequence."""

    def __init__(self, cluster: Cluster, sequences: list[list[str]]) -> None:
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(cluster, seq), daemon=True)
            for seq in sequences
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, cluster: Cluster, sequence: list[str]) -> None:
        channel = grpc.insecure_channel(cluster.grpc)
        call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        requests = {n: inference_request(n) for n in set(sequence)}
        turn = 0
        try:
            while not self._stop.is_set():
                name = sequence[turn % len(sequence)]
                turn += 1
                sent = time.monotonic()
                try:
                    answer = call(requests[name], timeout=REQUEST_TIMEOUT_S)
                except grpc.RpcError as exc:
                    detail = f"{name}: {exc.code().name} {exc.details()}"
                    self.outcomes.append(Outcome(sent, time.monotonic(), False, detail))
                    time.sleep(FAILED_PAUSE_S)
                    continue
                model, digit = answered_digit(answer)
                right = digit == 8 and model.startswith(f"{name}__isvc-")
                detail = "" if right else f"{name}: answered {model} {digit}"
                self.outcomes.append(Outcome(sent, time.monotonic(), right, detail))
                time.sleep(THINK_S)
        finally:
            channel.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def since(self, start: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.done >= start]


def tutorial_sequences() -> list[list[str]]:
    return [[TUTORIAL] for _ in range(CLIENTS)]


def mix_sequences() -> list[list[str]]:
    """2 hot models and the cold ones in turn (each client starts at its own cold one)."""
    out = []
    for client in range(CLIENTS):
        seq: list[str] = []
        for k in range(len(COLD)):
            seq += [*HOT, COLD[(client * 2 + k) % len(COLD)]]
        out.append(seq)
    return out


# ---------------------------------------------------------------- what is really loaded


@dataclass(frozen=True)
class Workload:
    name: str
    runtime: str
    models: tuple[str, ...]
    sequences: Callable[[], list[list[str]]]


WORKLOADS = (
    Workload("tutorial", TUTORIAL_RUNTIME, (TUTORIAL,), tutorial_sequences),
    Workload("mix", MIX_RUNTIME, tuple(MIX), mix_sequences),
)


def instance_id(pod_name: str) -> str:
    return pod_name[-12:]


_CHANNELS: dict[str, grpc.Channel] = {}


def held_models(address: str) -> set[str]:
    """The models the pod's model server itself has ready (V2 RepositoryIndex, not through
    the router); none when it does not answer."""
    from mmesh.core.proto import grpc_predict_v2_pb2 as v2

    channel = _CHANNELS.get(address)
    if channel is None:
        channel = _CHANNELS[address] = grpc.insecure_channel(f"{address}:{MODEL_SERVER_PORT}")
    call = channel.unary_unary(
        REPOSITORY_INDEX, request_serializer=None, response_deserializer=None
    )
    try:
        answer = call(v2.RepositoryIndexRequest(ready=True).SerializeToString(), timeout=3)
    except grpc.RpcError:
        return set()
    index = v2.RepositoryIndexResponse.FromString(answer)
    return {m.name for m in index.models if m.state.upper().endswith("READY")}


@dataclass
class Snapshot:
    """Registry records, the InferenceServices and what each pod's model server holds."""

    records: dict[str, dict[str, Any]]
    isvcs: dict[str, dict[str, Any]]
    pods: list[dict[str, Any]]
    held: dict[str, set[str]] = field(default_factory=dict)
    """concrete model id -> instance ids of the pods whose model server has it loaded."""

    def active(self, name: str) -> str | None:
        vmodel = self.records.get(f"vmodels/{name}")
        return None if vmodel is None else str(vmodel.get("amid") or "")

    def claims(self, model_id: str) -> set[str]:
        record = self.records.get(f"registry/{model_id}") or {}
        return set(record.get("loadedIn") or {})


def registry(cluster: Cluster) -> dict[str, dict[str, Any]]:
    records = {}
    for key, value in etcd_values(cluster, MESH).items():
        try:
            records[key.removeprefix(MESH)] = json.loads(value)
        except ValueError:
            continue
    return records


def snapshot(cluster: Cluster) -> Snapshot:
    items = json.loads(cluster.kubectl("get", "isvc,pods", "-o", "json", timeout=120))["items"]
    isvcs = {i["metadata"]["name"]: i for i in items if i["kind"] == "InferenceService"}
    pods = [i for i in items if i["kind"] == "Pod"]
    return Snapshot(registry(cluster), isvcs, pods)


def look_at_pods(snap: Snapshot) -> dict[str, set[str]]:
    """concrete model id -> instance ids of the runtime pods whose model server has it."""
    held: dict[str, set[str]] = {}
    for pod in snap.pods:
        address = pod.get("status", {}).get("podIP")
        if address and pod["metadata"]["name"].startswith("modelmesh-serving-"):
            for model_id in held_models(address):
                held.setdefault(model_id, set()).add(instance_id(pod["metadata"]["name"]))
    return held


def untruths(cluster: Cluster) -> dict[str, list[str]]:
    """Per workload, what the status or the registry says that is not so (empty: true).

    The pods are asked before and after the records are read, so a copy that comes or goes
    in between counts either way (the mix loads and evicts all the time)."""
    snap = snapshot(cluster)
    before = look_at_pods(snap)
    snap.records = registry(cluster)
    after = look_at_pods(snap)
    return {w.name: _untrue(snap, before, after, w) for w in WORKLOADS}


def _untrue(
    snap: Snapshot, before: dict[str, set[str]], after: dict[str, set[str]], workload: Workload
) -> list[str]:
    problems = []
    for name in workload.models:
        isvc = snap.isvcs.get(name)
        model_id = snap.active(name)
        if isvc is None or not model_id:
            problems.append(f"{name}: registration lost (isvc {isvc is not None})")
            continue
        status = isvc.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        state = status.get("modelStatus", {}).get("states", {}).get("activeModelState")
        copies = status.get("modelStatus", {}).get("copies", {}).get("totalCopies", 0)
        somewhere = before.get(model_id, set()) | after.get(model_id, set())
        stale = snap.claims(model_id) - somewhere
        if conditions.get("Ready") != "True":
            problems.append(f"{name}: READY {conditions.get('Ready')} ({state})")
        if stale:
            problems.append(f"{name}: registry claims copies on {sorted(stale)}, not loaded there")
        if state == "Loaded" and not somewhere:
            problems.append(f"{name}: Loaded with {copies} copies, loaded nowhere")
        if state not in ("Loaded", "Loading", "Standby"):
            problems.append(f"{name}: {state}")
        claims = snap.claims(model_id)
        if len(workload.models) == 1 and state == "Loaded" and copies != len(claims):
            problems.append(f"{name}: totalCopies {copies}, the registry says {sorted(claims)}")
    return problems


def orphans(cluster: Cluster) -> list[str]:
    """Copies a model server holds (on two looks) that no registry record claims for its
    pod: memory nobody accounts for (reported, not a lie of the status)."""
    snap = snapshot(cluster)
    before = look_at_pods(snap)
    snap.records = registry(cluster)
    after = look_at_pods(snap)
    found = []
    for model_id, pods in before.items():
        for iid in pods & after.get(model_id, set()):
            if iid not in snap.claims(model_id):
                found.append(f"{model_id} on {iid}")
    return sorted(found)


def truthful(cluster: Cluster) -> bool:
    problems = untruths(cluster)
    assert not any(problems.values()), problems
    return True


# ---------------------------------------------------------------- setup


@dataclass
class Faults:
    cluster: Cluster
    target: Path
    results: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        self.target.write_text(json.dumps({"cases": self.results}, indent=2) + "\n")


def mix_path(name: str) -> str:
    return f"sklearn/faults/{name}/mnist-svm.joblib"


@pytest.fixture(scope="module")
def faults(
    local_cluster: Cluster, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faults]:
    cluster = local_cluster
    disk_bytes = upload_copies(cluster, [mix_path(n) for n in MIX])
    sizing = Sizing.for_model(math.ceil(disk_bytes * SIZE_MULTIPLIER))
    guard = yaml.safe_dump(churn_guard_off(cluster))
    cluster.kubectl("apply", "-f", "-", stdin=guard, timeout=300)
    cluster.wait(
        lambda: deployment_env(cluster, TUTORIAL_RUNTIME, "mm").get("MM_MIN_CHURN_AGE_MS") == "0",
        60,
        "model-serving-config reaching the runtime Deployments",
    )
    docs = [small_runtime(cluster.namespace, sizing), *(isvc_manifest(n, mix_path(n)) for n in MIX)]
    docs.append(yaml.safe_load((EXAMPLES / "tutorial-isvc.yaml").read_text()))
    # one apply, with time to spare: the emulated API is one Python process on a busy machine
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs), timeout=300)

    def pods_running() -> bool:
        pods = [p for w in WORKLOADS for p in runtime_pods(cluster, w.runtime)]
        return len(pods) == 4 and all(pod_row(p)[:2] == ("Running", 3) for p in pods)

    cluster.wait(pods_running, 180, "4 runtime pods 3/3 Running")
    folder = tmp_path_factory.mktemp("faults")
    found = Faults(cluster, Path(os.environ.get("MMESH_FAULT_RESULTS") or folder / "faults.json"))
    yield found
    found.save()
    report(found.results, found.target, pytestconfig)


def report(results: list[dict[str, Any]], target: Path, config: pytest.Config) -> None:
    lines = [
        f"{'fault':<22}{'workload':<10}{'no answer s':>12}{'failed':>8}"
        f"{'last fail s':>12}{'status s':>10}{'answers':>9}{'orphans':>9}"
    ]
    for row in results:
        lines.append(
            f"{row['fault']:<22}{row['workload']:<10}{row['no_answer_s']:>12.1f}"
            f"{row['failed']:>8}{row['last_failure_s']:>12.1f}{row['status_s']:>10.1f}"
            f"{row['answers']:>9}{len(row['orphans']):>9}"
        )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    text = "\n".join(["", f"fault matrix ({target}):", *lines])
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)


# ---------------------------------------------------------------- faults


def running_pods(cluster: Cluster, runtime: str) -> list[str]:
    """The runtime's pods, from the cluster's control endpoint (no API call: the emulated
    API can be slow on a busy machine, and a fault must land when the test says)."""
    pods = cluster.control_call("/processes", method="GET")["pods"]
    return sorted(n for n in pods if n.startswith(f"modelmesh-serving-{runtime}-"))


def victims(cluster: Cluster) -> dict[str, str]:
    """Per workload, the runtime pod holding the most of its copies (by the registry)."""
    records = registry(cluster)
    found = {}
    for workload in WORKLOADS:
        pods = running_pods(cluster, workload.runtime)
        counts = dict.fromkeys(pods, 0)
        for name in workload.models:
            model_id = str((records.get(f"vmodels/{name}") or {}).get("amid") or "")
            claims = (records.get(f"registry/{model_id}") or {}).get("loadedIn") or {}
            for pod in pods:
                counts[pod] += instance_id(pod) in claims
        found[workload.name] = max(pods, key=lambda p: counts[p])
    return found


def kill(cluster: Cluster, containers: tuple[str, ...]) -> Callable[[], None]:
    def fault() -> None:
        for pod in victims(cluster).values():
            for container in containers:
                cluster.kill_container(pod, container)

    return fault


def kill_mm_in_turn(cluster: Cluster) -> None:
    pods = {w.name: running_pods(cluster, w.runtime) for w in WORKLOADS}
    for turn in range(2):
        if turn:
            time.sleep(TURN_S)
        for names in pods.values():
            cluster.kill_container(names[turn], "mm")


def delete_pod(cluster: Cluster) -> None:
    cluster.kubectl("delete", "pod", *victims(cluster).values(), "--wait=false", timeout=180)


def restart_etcd(cluster: Cluster) -> None:
    cluster.control_call("/etcd/kill")
    time.sleep(ETCD_DOWN_S)
    cluster.control_call("/etcd/start")


def kill_operator(cluster: Cluster) -> None:
    cluster.control_call("/operator/kill")


def mm_pids(cluster: Cluster, pods: Collection[str]) -> dict[str, int | None]:
    """The pid of each pod's running `mm` container (None while it is down)."""
    running = cluster.control_call("/processes", method="GET")["pods"]
    return {pod: (running.get(pod) or {}).get("mm") for pod in pods}


def kill_mm_while_it_starts(cluster: Cluster) -> None:
    """SIGKILL `mm`, and again as soon as it has started once more (before it is ready)."""
    pods = list(victims(cluster).values())
    first = {pod: cluster.kill_container(pod, "mm") for pod in pods}

    def restarted() -> bool:
        now = mm_pids(cluster, pods)
        return all(now[pod] not in (None, first[pod]) for pod in pods)

    cluster.wait(restarted, 30, "mm started again")
    time.sleep(STARTING_S)
    for pod in pods:
        cluster.kill_container(pod, "mm")


def kill_mm_while_etcd_is_down(cluster: Cluster) -> None:
    """etcd goes away; `mm` of the busiest pods is SIGKILLed while it is away (it restarts
    with no etcd to register in); etcd comes back."""
    pods = list(victims(cluster).values())
    cluster.control_call("/etcd/kill")
    time.sleep(1.0)
    for pod in pods:
        cluster.kill_container(pod, "mm")
    time.sleep(ETCD_DOWN_S)
    cluster.control_call("/etcd/start")


def kill_model_server_then_mm(cluster: Cluster) -> None:
    """The model server dies; its router dies a moment later, before it has repaired."""
    pods = list(victims(cluster).values())
    for pod in pods:
        cluster.kill_container(pod, "mlserver")
    time.sleep(1.0)
    for pod in pods:
        cluster.kill_container(pod, "mm")


def kill_every_mm_at_once(cluster: Cluster) -> None:
    """Every router of both runtimes at the same moment: no copy is reachable for a while."""
    for workload in WORKLOADS:
        for pod in running_pods(cluster, workload.runtime):
            cluster.kill_container(pod, "mm")


def restart_etcd_twice(cluster: Cluster) -> None:
    """etcd restarts, and goes away again 3 s after it came back."""
    restart_etcd(cluster)
    time.sleep(3.0)
    restart_etcd(cluster)


FAULTS: dict[str, Callable[[Cluster], None]] = {
    "mm": lambda c: kill(c, ("mm",))(),
    "mm in every pod": kill_mm_in_turn,
    "model server": lambda c: kill(c, ("mlserver",))(),
    "adapter": lambda c: kill(c, ("mlserver-adapter",))(),
    "all containers": lambda c: kill(c, ("mm", "mlserver", "mlserver-adapter"))(),
    "kubectl delete pod": delete_pod,
    "etcd restart": restart_etcd,
    "operator": kill_operator,
    "mm, again while it starts": kill_mm_while_it_starts,
    "mm while etcd is down": kill_mm_while_etcd_is_down,
    "model server, then mm": kill_model_server_then_mm,
    "every mm at once": kill_every_mm_at_once,
    "etcd restart twice": restart_etcd_twice,
}


# ---------------------------------------------------------------- one case


def longest_silence(outcomes: list[Outcome], start: float, end: float) -> float:
    times = sorted(o.done for o in outcomes if o.ok and start <= o.done <= end)
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


def quiet(load: Load, now: float) -> bool:
    recent = load.since(now - QUIET_S)
    return bool(recent) and all(o.ok for o in recent)


@dataclass
class Watch:
    """Polls each workload's truth until the case ends. A status may lag what is loaded by up
    to `LAG_S` (issue 11: "within 10 s of any change"); the mix loads and evicts every second,
    so a problem is a lie only once the same one has been seen for longer than that."""

    last_untrue: dict[str, float] = field(default_factory=dict)
    last_problems: dict[str, list[str]] = field(default_factory=dict)
    true_in_a_row: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)

    def poll(self, cluster: Cluster) -> None:
        now = time.monotonic()
        try:
            found = untruths(cluster)
        except (AssertionError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            found = {w.name: [f"unreadable: {exc}"] for w in WORKLOADS}
        seen = {p for problems in found.values() for p in problems}
        self.first_seen = {p: self.first_seen.get(p, now) for p in seen}
        for workload in WORKLOADS:
            problems = [p for p in found[workload.name] if self._lasting(p, now)]
            if problems:
                self.last_untrue[workload.name] = now
                self.last_problems[workload.name] = problems
                self.true_in_a_row[workload.name] = 0
            else:
                self.true_in_a_row[workload.name] = self.true_in_a_row.get(workload.name, 0) + 1

    def _lasting(self, problem: str, now: float) -> bool:
        return problem.startswith("unreadable") or now - self.first_seen[problem] > LAG_S

    def settled(self) -> bool:
        return all(self.true_in_a_row.get(w.name, 0) >= 2 for w in WORKLOADS)


def run_case(faults: Faults, fault: str) -> dict[str, dict[str, Any]]:
    cluster = faults.cluster
    loads = {w.name: Load(cluster, w.sequences()) for w in WORKLOADS}
    try:
        warm = time.monotonic()
        cluster.wait(
            lambda: (
                all(quiet(load, time.monotonic()) for load in loads.values())
                and time.monotonic() - warm > QUIET_S
            ),
            90,
            f"both workloads answering before the fault ({fault})",
        )
        started = time.monotonic()
        FAULTS[fault](cluster)
        ended = time.monotonic()
        watch = Watch()
        while True:
            now = time.monotonic()
            watch.poll(cluster)
            answering = all(quiet(load, now) for load in loads.values())
            if (now - ended > QUIET_S and answering and watch.settled()) or (
                now - ended > CASE_LIMIT_S
            ):
                break
            time.sleep(POLL_S)
        finished = time.monotonic()
    finally:
        for load in loads.values():
            load.close()
    try:
        left_over = orphans(cluster)
    except (AssertionError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        left_over = [f"unreadable: {exc}"]
    rows = {}
    for workload in WORKLOADS:
        outcomes = loads[workload.name].since(started)
        failures = [o for o in outcomes if not o.ok]
        untrue = watch.last_untrue.get(workload.name)
        row = {
            "fault": fault,
            "workload": workload.name,
            "fault_s": round(ended - started, 1),
            "no_answer_s": round(longest_silence(outcomes, started, finished), 2),
            "failed": len(failures),
            "answers": sum(1 for o in outcomes if o.ok),
            "last_failure_s": round(max((o.done for o in failures), default=started) - started, 2),
            "status_s": round((untrue + POLL_S if untrue else started) - started, 2),
            "status_settled": watch.settled(),
            "errors": sorted({o.detail[:200] for o in failures})[:5],
            "failed_at": [time.strftime("%H:%M:%S", time.localtime(o.wall)) for o in failures][:5],
            "untrue": watch.last_problems.get(workload.name, [])[:5],
            "orphans": [o for o in left_over if o.split("__isvc-")[0] in workload.models],
        }
        rows[workload.name] = row
        faults.results.append(row)
    faults.save()
    return rows


def check_recovered(row: dict[str, Any], *, from_s: float = 0.0) -> None:
    """Answers again within ANSWER_WITHIN_S of `from_s` (s after the fault started), no
    failure after that, and a true status soon after."""
    assert row["no_answer_s"] <= ANSWER_WITHIN_S + from_s, row
    assert row["last_failure_s"] <= ANSWER_WITHIN_S + from_s, row
    assert row["status_settled"], row
    assert row["status_s"] <= STATUS_WITHIN_S + from_s, row


# ---------------------------------------------------------------- the tests


def test_both_workloads_answer_and_the_status_is_true(faults: Faults) -> None:
    cluster = faults.cluster
    loads = [Load(cluster, w.sequences()) for w in WORKLOADS]
    try:
        cluster.wait(
            lambda: all(quiet(load, time.monotonic()) for load in loads), 120, "first answers"
        )
    finally:
        for load in loads:
            load.close()
    cluster.wait(lambda: truthful(cluster), 60, "a true status")
    snap = snapshot(cluster)
    loaded = [n for n in MIX if snap.claims(snap.active(n) or "")]
    assert len(loaded) < len(MIX), "the mix's pods must hold fewer than 10 copies"


@pytest.mark.parametrize(
    "fault",
    ["mm", "mm in every pod", "model server", "adapter", "all containers", "kubectl delete pod"],
)
def test_a_killed_part_heals(faults: Faults, fault: str) -> None:
    rows = run_case(faults, fault)
    for row in rows.values():
        check_recovered(row, from_s=row["fault_s"] if fault == "mm in every pod" else 0.0)
    assert_registrations(faults.cluster)


def test_etcd_restart_stops_no_warm_request(faults: Faults) -> None:
    rows = run_case(faults, "etcd restart")
    tutorial, mix = rows["tutorial"], rows["mix"]
    assert tutorial["failed"] == 0, tutorial  # warm: no etcd call on the way
    assert tutorial["no_answer_s"] <= 3.0, tutorial
    # Cold models load while etcd is down (recorded once it is back): none fails. Before,
    # each failed UNAVAILABLE naming etcd and the mix went 10.7 s without an answer.
    assert mix["failed"] == 0, mix
    assert mix["no_answer_s"] <= 4.0, mix
    back = mix["fault_s"]
    check_recovered(mix, from_s=back)
    check_recovered(tutorial, from_s=back)
    assert_registrations(faults.cluster)


def test_a_killed_operator_changes_nothing_for_traffic(faults: Faults) -> None:
    rows = run_case(faults, "operator")
    for row in rows.values():
        assert row["failed"] == 0, row
        assert row["no_answer_s"] <= 3.0, row
        check_recovered(row)
    assert_registrations(faults.cluster)


@pytest.mark.parametrize(
    "fault",
    [
        "mm, again while it starts",
        "mm while etcd is down",
        "model server, then mm",
        "every mm at once",
        "etcd restart twice",
    ],
)
def test_faults_in_a_row_heal(faults: Faults, fault: str) -> None:
    rows = run_case(faults, fault)
    for row in rows.values():
        check_recovered(row, from_s=row["fault_s"])
    assert_registrations(faults.cluster)


def assert_registrations(cluster: Cluster) -> None:
    """Every InferenceService still has its vmodel and its active model's record."""
    snap = snapshot(cluster)
    for name in (TUTORIAL, *MIX):
        model_id = snap.active(name)
        assert model_id, f"vmodel {name} lost"
        assert f"registry/{model_id}" in snap.records, f"model record {model_id} lost"
        assert name in snap.isvcs, f"InferenceService {name} lost"
