"""The mesh as a cache, seen by a user: 2 runtime pods, 20 InferenceServices, room for 4.

The module's own ServingRuntime `mlserver-small` is the built-in MLServer runtime with a tiny
memory request: each pod's cache holds 2 copies of the tutorial's MNIST model plus a little
spare room (4 copies, 4.4 model sizes in all; see `Sizing`). Every InferenceService reads its own
copy of the model from the S3 server. A hot set of 3 models is used all the time while a round
robin walks all 20: every answer must be the digit 8, `kubectl get isvc` must stay truthful
(READY True; Loaded only for what is loaded, Standby for evicted models; never more Loaded than
fits) and the hot models end up Loaded. Then one InferenceService moves to a new storage path
twice while batches keep coming: the answers switch to the new concrete model, the status comes
back UpToDate, and no request may fail; and the status follows quick updates promptly. Last,
the adapter's size guess is lowered below the spare room (as the default 1 MB guess is for real
models): full pods look roomy and even hot models get evicted; requests may be slower, none may
fail.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import pytest
import yaml

from tests.fixtures.cluster import (
    Cluster,
    answered_digit,
    etcd_values,
    inference_request,
    pod_row,
    runtime_pods,
    scrape_metrics,
    tutorial_request,
)
from tests.fixtures.procs import ROOT

pytestmark = pytest.mark.timeout(420)


RUNTIME = "mlserver-small"
MODELS = [f"mesh-{i:02d}" for i in range(20)]
HOT = MODELS[:3]
BUCKET = "modelmesh-example-models"
SAMPLE = "sklearn/mnist-svm.joblib"
MEM_BUFFER_BYTES = 128 * 1024 * 1024  # the built-in runtimes' memBufferBytes
SIZE_MULTIPLIER = 1.25  # the adapter's MODELSIZE_MULTIPLIER, set explicitly below
COPIES_PER_POD = 2
UNIT = 8192  # the mesh counts sizes in 8 KiB units, rounded up
REGISTRY = "modelmesh-serving/mm/modelmesh-serving/registry/"
INSTANCES = "modelmesh-serving/mm/modelmesh-serving/instances/"
INFER = "/inference.GRPCInferenceService/ModelInfer"
BATCH_ROWS = 5000
"""Rows per request while a storage path changes: each request takes ~0.15 s in the model
server, so some are always in flight when the old model is retired."""
UPDATES = ("v2", "v3")
STATUS_S = 20
"""How long `kubectl get isvc` may lag the registry: the operator's registry watch gets there in
a second or two (its 60 s idle recheck must not be what corrects a status)."""
RELEASES = ("r1", "r2", "r3")
"""Storage paths the status-lag test moves MODELS[-1] through."""


def units(size: int) -> int:
    return -(-size // UNIT)


@dataclass(frozen=True)
class Sizing:
    """Each pod's cache, in 8 KiB units, sized for COPIES_PER_POD copies of the model.

    Before a load the adapter can only guess a model's size (DEFAULT_MODELSIZE); placement
    calls a pod full when its free space is below that guess, and the mesh refuses to start
    with a capacity below 10 guesses (the reference's start-up check). So the capacity is the
    copies plus a little spare room, and the guess is just above the spare room: a pod with
    its copies loaded counts as full, and a new copy goes where the oldest model is.
    """

    model: int
    """One copy as the adapter reports it once loaded (bytes on disk x multiplier)."""
    spare: int

    @classmethod
    def for_model(cls, model_bytes: int) -> Sizing:
        model = units(model_bytes)
        spare = (COPIES_PER_POD * model - 10) // 9  # the largest with 10 x guess <= capacity
        return cls(model, spare)

    @property
    def capacity(self) -> int:
        return COPIES_PER_POD * self.model + self.spare

    @property
    def guess(self) -> int:
        return self.spare + 1


@dataclass(frozen=True)
class Mesh:
    cluster: Cluster
    sizing: Sizing

    @property
    def fit(self) -> int:
        """Copies that fit in the 2 pods together."""
        return 2 * (self.sizing.capacity // self.sizing.model)


# ---------------------------------------------------------------- setup, as a user does it


def upload_copies(cluster: Cluster, keys: list[str]) -> int:
    """Copy the sample model to each key in the bucket; its size on disk."""
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=cluster.s3, region_name="us-east-1",
        aws_access_key_id="user", aws_secret_access_key="user",
    )  # fmt: skip
    for key in keys:
        s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": SAMPLE})
    return int(s3.head_object(Bucket=BUCKET, Key=SAMPLE)["ContentLength"])


def small_runtime(namespace: str, sizing: Sizing, guess: int | None = None) -> dict[str, Any]:
    """mlserver-1.x as shipped, renamed, not auto-selected, with a memory request that leaves
    `sizing.capacity` for models and the adapter's size guess set to `sizing.guess` (or
    `guess`, in units)."""
    doc = yaml.safe_load((ROOT / "config" / "runtimes" / "mlserver-1.x.yaml").read_text())
    doc["kind"] = "ServingRuntime"
    doc["metadata"] = {"name": RUNTIME, "namespace": namespace}
    for fmt in doc["spec"]["supportedModelFormats"]:
        fmt["autoSelect"] = False
    container = doc["spec"]["containers"][0]
    memory = MEM_BUFFER_BYTES + sizing.capacity * UNIT
    container["resources"]["requests"]["memory"] = str(memory)
    adapter = doc["spec"]["builtInAdapter"]
    assert adapter["memBufferBytes"] == MEM_BUFFER_BYTES
    adapter["env"] = [
        {"name": "MODELSIZE_MULTIPLIER", "value": str(SIZE_MULTIPLIER)},
        {"name": "DEFAULT_MODELSIZE", "value": str((guess or sizing.guess) * UNIT)},
    ]
    return dict(doc)


def isvc_manifest(name: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "runtime": RUNTIME,
                    "storage": {"key": "localMinIO", "path": path},
                }
            }
        },
    }


def model_path(name: str, version: str = "v1") -> str:
    return f"sklearn/mesh/{name}/{version}/mnist-svm.joblib"


def churn_guard_off(cluster: Cluster) -> dict[str, Any]:
    """model-serving-config (the cluster's own settings kept): models may be evicted right
    after use. The default guard keeps anything used in the last 5 minutes, so a 20-model
    round robin through room for 4 would be refused."""
    found = cluster.kubectl("get", "configmap", "model-serving-config", "-o", "json", check=False)
    config = yaml.safe_load(json.loads(found)["data"]["config.yaml"]) if found else {}
    env = [e for e in config.get("internalModelMeshEnvVars") or [] if "CHURN" not in e["name"]]
    config["internalModelMeshEnvVars"] = [*env, {"name": "MM_MIN_CHURN_AGE_MS", "value": "0"}]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-serving-config"},
        "data": {"config.yaml": yaml.safe_dump(config)},
    }


def deployment_env(cluster: Cluster, runtime: str, container: str) -> dict[str, str]:
    deployment = json.loads(
        cluster.kubectl("get", "deployment", f"modelmesh-serving-{runtime}", "-o", "json")
    )
    for spec in deployment["spec"]["template"]["spec"]["containers"]:
        if spec["name"] == container:
            return {e["name"]: str(e.get("value", "")) for e in spec.get("env") or []}
    raise AssertionError(f"no container {container} in the {runtime} Deployment")


def apply(cluster: Cluster, *docs: dict[str, Any]) -> str:
    return cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


@pytest.fixture(scope="module")
def mesh(local_cluster: Cluster) -> Mesh:
    cluster = local_cluster
    keys = [model_path(n) for n in MODELS] + [model_path(HOT[0], v) for v in UPDATES]
    keys += [model_path(MODELS[-1], v) for v in RELEASES]
    disk_bytes = upload_copies(cluster, keys)
    sizing = Sizing.for_model(math.ceil(disk_bytes * SIZE_MULTIPLIER))

    apply(cluster, churn_guard_off(cluster))
    cluster.wait(
        lambda: deployment_env(cluster, "mlserver-1.x", "mm").get("MM_MIN_CHURN_AGE_MS") == "0",
        60,
        "model-serving-config reaching the runtime Deployments",
    )
    out = apply(cluster, small_runtime(cluster.namespace, sizing))
    assert f"servingruntime.serving.kserve.io/{RUNTIME} created" in out
    cluster.wait(
        lambda: deployment_env(cluster, RUNTIME, "mm").get("MM_MIN_CHURN_AGE_MS") == "0",
        60,
        f"the {RUNTIME} Deployment",
    )
    out = apply(cluster, *(isvc_manifest(n, model_path(n)) for n in MODELS))
    assert out.count(" created") == len(MODELS), out

    def all_ready() -> bool:
        return all(ready(i) for i in isvcs(cluster).values()) and len(isvcs(cluster)) == 20

    cluster.wait(all_ready, 180, "20 InferenceServices READY True")

    def two_pods_running() -> bool:
        pods = runtime_pods(cluster, RUNTIME)
        return len(pods) == 2 and all(pod_row(p)[:2] == ("Running", 3) for p in pods)

    cluster.wait(two_pods_running, 120, f"2 {RUNTIME} pods 3/3 Running")
    return Mesh(cluster, sizing)


# ---------------------------------------------------------------- what the user sees


def isvcs(cluster: Cluster) -> dict[str, dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "isvc", "-o", "json"))["items"]
    return {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in MODELS}


def ready(isvc: dict[str, Any]) -> bool:
    conditions = isvc.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def updated(cluster: Cluster, name: str) -> bool:
    """READY True, UpToDate and Loaded: an update is over."""
    status = cluster.isvc(name)["status"]
    model_status = status["modelStatus"]
    return bool(
        model_status["transitionStatus"] == "UpToDate"
        and model_status["states"]["activeModelState"] == "Loaded"
        and ready({"status": status})
    )


def active_state(isvc: dict[str, Any]) -> str:
    return str(isvc.get("status", {}).get("modelStatus", {}).get("states", {}).get(
        "activeModelState", ""
    ))  # fmt: skip


def loaded_in_etcd(cluster: Cluster) -> dict[str, int]:
    """InferenceService name -> loaded copies, from the registry records in etcd."""
    found: dict[str, int] = Counter()
    for key, value in etcd_values(cluster, REGISTRY).items():
        record = json.loads(value)
        copies = len(record.get("loadedIn") or {})
        if copies:
            found[key.removeprefix(REGISTRY).split("__isvc-")[0]] += copies
    return dict(found)


class Client:
    """The tutorial's request over one gRPC connection to the forwarded Service."""

    def __init__(self, cluster: Cluster) -> None:
        self.channel = grpc.insecure_channel(cluster.grpc)
        self.call = self.channel.unary_unary(
            INFER, request_serializer=None, response_deserializer=None
        )
        self.requests = {n: inference_request(n) for n in MODELS}

    def infer(self, name: str) -> tuple[str, int]:
        answer = self.call(self.requests[name], timeout=60)
        assert isinstance(answer, bytes)
        return answered_digit(answer)

    def close(self) -> None:
        self.channel.close()


@dataclass
class Traffic:
    """Requests sent by a background thread, with what came back."""

    answers: list[tuple[str, str, int]] = field(default_factory=list)
    """(isvc, modelName, digit) for each answer."""
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def hot_traffic(client: Client, traffic: Traffic, names: list[str], pause_s: float) -> None:
    while not traffic.stop.is_set():
        for name in names:
            try:
                model, digit = client.infer(name)
            except grpc.RpcError as exc:
                traffic.errors.append(f"{name}: {exc.code()} {exc.details()}")
            else:
                traffic.answers.append((name, model, digit))
        time.sleep(pause_s)


@pytest.fixture
def client(mesh: Mesh) -> Iterator[Client]:
    c = Client(mesh.cluster)
    yield c
    c.close()


# ---------------------------------------------------------------- the tests


def test_capacity_is_what_the_runtime_asks_for(mesh: Mesh) -> None:
    sizing = mesh.sizing
    assert mesh.fit == 2 * COPIES_PER_POD
    instances = [json.loads(v) for v in etcd_values(mesh.cluster, INSTANCES).values()]
    assert [i["cap"] for i in instances] == [sizing.capacity] * 2, instances
    pods = runtime_pods(mesh.cluster, RUNTIME)
    assert len(pods) == 2
    for pod in pods:
        metrics = scrape_metrics(pod["status"]["podIP"])
        assert metrics["modelmesh_instance_capacity_bytes"] == sizing.capacity * UNIT
        # new InferenceServices load at once (as the reference's loadNow), as far as room goes
        assert metrics["modelmesh_instance_models_total"] <= COPIES_PER_POD
        assert metrics["modelmesh_instance_used_bytes"] <= sizing.capacity * UNIT
    check_status(mesh, most_loaded=mesh.fit)


def check_status(mesh: Mesh, most_loaded: int) -> dict[str, str]:
    """Every InferenceService READY True, in a state a cache can be in, with no more Loaded
    than `most_loaded`; name -> activeModelState."""
    found = isvcs(mesh.cluster)
    assert len(found) == len(MODELS)
    not_ready = [n for n, i in found.items() if not ready(i)]
    assert not not_ready, f"READY is not True for {not_ready}"
    states = {n: active_state(i) for n, i in found.items()}
    assert set(states.values()) <= {"Loaded", "Loading", "Standby"}, states
    loaded = sorted(n for n, s in states.items() if s == "Loaded")
    assert len(loaded) <= most_loaded, f"{len(loaded)} Loaded, only {most_loaded} fit: {loaded}"
    return states


STATUS_LAG_S = 5.0
"""How long the status may trail a copy that is being unloaded: the registry lists a copy
until its unload ends, so for a moment the new copy and the leaving one both show Loaded."""


def check_status_settles(mesh: Mesh, most_loaded: int) -> None:
    """`check_status` holds now, or within STATUS_LAG_S: a lie that lasts fails."""
    deadline = time.monotonic() + STATUS_LAG_S
    while True:
        try:
            check_status(mesh, most_loaded)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_hot_models_stay_loaded_while_a_round_robin_churns_the_rest(
    mesh: Mesh, client: Client
) -> None:
    cluster = mesh.cluster
    traffic = Traffic()
    second = Client(cluster)  # its own connection: maybe the other pod's router
    hot = threading.Thread(target=hot_traffic, args=(second, traffic, HOT, 0.05), daemon=True)
    hot.start()
    cold: list[tuple[str, str, int]] = []
    samples = 0
    try:
        for name in MODELS[3:] + MODELS[3:10]:  # the round robin: 17 cold models, 7 again
            model, digit = client.infer(name)
            cold.append((name, model, digit))
            # while copies come and go, the status never claims more than the pods hold
            # for longer than an unload takes
            check_status_settles(mesh, most_loaded=mesh.fit)
            samples += 1
    finally:
        traffic.stop.set()
        hot.join(30)
        second.close()
    for name in HOT:  # the hot set is used last
        assert client.infer(name)[1] == 8

    assert not traffic.errors, traffic.errors[:5]
    answers = traffic.answers + cold
    wrong = [a for a in answers if a[2] != 8]
    assert not wrong, wrong[:5]
    for name, model, _ in answers:
        assert re.fullmatch(rf"{name}__isvc-[0-9a-f]{{10}}", model), (name, model)
    per_hot = Counter(a[0] for a in traffic.answers)
    assert all(per_hot[n] >= 20 for n in HOT), per_hot
    assert samples == 24

    def settled() -> bool:
        states = check_status(mesh, most_loaded=mesh.fit)
        truth = loaded_in_etcd(cluster)
        assert "Loading" not in states.values(), states
        assert {n for n, s in states.items() if s == "Loaded"} == set(truth), (states, truth)
        return True

    cluster.wait(settled, STATUS_S, "the InferenceService states matching the loaded copies")
    found = isvcs(cluster)
    states = {n: active_state(i) for n, i in found.items()}
    loaded = {n for n, s in states.items() if s == "Loaded"}
    assert set(HOT) <= loaded, states
    evicted = set(MODELS) - loaded
    assert len(evicted) >= len(MODELS) - mesh.fit
    for name in evicted:  # used once, evicted since: Standby, ready to load again
        status = found[name]["status"]["modelStatus"]
        assert status["states"]["activeModelState"] == "Standby", (name, status)
        assert status["copies"]["totalCopies"] == 0, (name, status)
        assert status["transitionStatus"] == "UpToDate", (name, status)
    for name in loaded:
        assert found[name]["status"]["modelStatus"]["copies"]["totalCopies"] >= 1

    routers = [scrape_metrics(p["status"]["podIP"]) for p in runtime_pods(cluster, RUNTIME)]
    assert sum(m["modelmesh_instance_models_total"] for m in routers) == len(loaded)
    for m in routers:
        assert m["modelmesh_instance_used_bytes"] <= m["modelmesh_instance_capacity_bytes"]
    assert sum(m["modelmesh_model_evicted_total"] for m in routers) >= len(MODELS) - len(loaded)


def batch_request(name: str, rows: int) -> bytes:
    from google.protobuf import json_format

    from mmesh.core.proto import grpc_predict_v2_pb2

    body = tutorial_request(name)
    tensor = body["inputs"][0]
    tensor["shape"] = [rows, 64]
    tensor["contents"]["fp32_contents"] = tensor["contents"]["fp32_contents"] * rows
    message = grpc_predict_v2_pb2.ModelInferRequest()
    json_format.ParseDict(body, message)
    return message.SerializeToString()


def batch_traffic(client: Client, traffic: Traffic, name: str, request: bytes) -> None:
    from mmesh.core.proto import grpc_predict_v2_pb2

    while not traffic.stop.is_set():
        try:
            answer = grpc_predict_v2_pb2.ModelInferResponse.FromString(
                client.call(request, timeout=60)
            )
        except grpc.RpcError as exc:
            traffic.errors.append(f"{name}: {exc.code()} {exc.details()}")
            continue
        digits = set(answer.outputs[0].contents.int64_contents)
        rows = len(answer.outputs[0].contents.int64_contents)
        traffic.answers.append((name, answer.model_name, 8 if digits == {8} else -rows))


def update_under_load(mesh: Mesh, clients: list[Client], name: str, version: str) -> Traffic:
    """`kubectl apply` a new storage path for `name` while 4 threads send batches; returns
    once the answers come from the new model and the old one is unregistered."""
    cluster = mesh.cluster
    before = clients[0].infer(name)[0]
    traffic = Traffic()
    request = batch_request(name, BATCH_ROWS)
    senders = [
        threading.Thread(target=batch_traffic, args=(c, traffic, name, request), daemon=True)
        for c in clients * 2
    ]
    for sender in senders:
        sender.start()
    try:
        time.sleep(1.0)
        out = apply(cluster, isvc_manifest(name, model_path(name, version)))
        assert out.strip() == f"inferenceservice.serving.kserve.io/{name} configured"

        def switched() -> bool:
            recent = [a[1] for a in traffic.answers[-8:]]
            return len(recent) == 8 and before not in recent

        cluster.wait(switched, 60, f"{name} answering from {version}")
        cluster.wait(
            lambda: not any(before in k for k in etcd_values(cluster, REGISTRY)),
            30,
            f"the old model {before} unregistered",
        )
    finally:
        traffic.stop.set()
        for sender in senders:
            sender.join(60)
    models = [a[1] for a in traffic.answers]
    after = models[-1]
    assert re.fullmatch(rf"{name}__isvc-[0-9a-f]{{10}}", after) and after != before, after
    assert set(models) == {before, after}, Counter(models)
    assert all(a[2] == 8 for a in traffic.answers), [a for a in traffic.answers if a[2] != 8]

    cluster.wait(lambda: updated(cluster, name), STATUS_S, f"{name} UpToDate on {version}")
    assert any(after in k for k in etcd_values(cluster, REGISTRY))
    return traffic


def test_new_storage_path_under_load_fails_no_request(mesh: Mesh, client: Client) -> None:
    """Rolling model updates: the answers switch to the new concrete model id, the status
    comes back UpToDate and Loaded, and no request fails."""
    second = Client(mesh.cluster)
    try:
        runs = [update_under_load(mesh, [client, second], HOT[0], v) for v in UPDATES]
    finally:
        second.close()
    answered = sum(len(t.answers) for t in runs)
    assert answered >= 10 * len(UPDATES), answered
    errors = [e for t in runs for e in t.errors]
    assert not errors, f"{len(errors)} of {answered + len(errors)} requests failed: {errors[:3]}"


def serves_another(client: Client, name: str, before: str) -> bool:
    return client.infer(name)[0] != before


def test_the_status_follows_each_storage_update_promptly(mesh: Mesh, client: Client) -> None:
    cluster, name = mesh.cluster, MODELS[-1]
    for release in RELEASES:
        before = client.infer(name)[0]  # loaded: the update is a transition, not a switch
        apply(cluster, isvc_manifest(name, model_path(name, release)))
        cluster.wait(partial(serves_another, client, name, before), 30, f"{name} on {release}")
        # InProgress came and went within a second or two: the status must not stay there
        cluster.wait(lambda: updated(cluster, name), STATUS_S, f"{name} UpToDate on {release}")


def rolled_out(cluster: Cluster, guess_bytes: int) -> bool:
    pods = runtime_pods(cluster, RUNTIME)
    guesses = {
        e.get("value")
        for p in pods
        for c in p["spec"]["containers"]
        for e in c.get("env") or []
        if e["name"] == "DEFAULT_MODELSIZE"
    }
    return (
        len(pods) == 2
        and guesses == {str(guess_bytes)}
        and all(pod_row(p)[:2] == ("Running", 3) for p in pods)
    )


def test_no_request_fails_while_full_pods_look_roomy(mesh: Mesh, client: Client) -> None:
    """The adapter's size guess below the spare room, as with the default 1 MB guess and real
    models: placement takes full pods for roomy ones and evicts even hot models. Requests
    get slower; none may fail. (Last: it rolls the runtime's pods.)"""
    cluster, guess = mesh.cluster, max(1, mesh.sizing.spare - 2)
    apply(cluster, small_runtime(cluster.namespace, mesh.sizing, guess=guess))
    cluster.wait(lambda: rolled_out(cluster, guess * UNIT), 120, f"{RUNTIME} pods rolled out")
    traffic, cold_errors = Traffic(), []
    second = Client(cluster)
    hot = threading.Thread(target=hot_traffic, args=(second, traffic, HOT, 0.0), daemon=True)
    hot.start()
    try:
        for name in MODELS[3:] * 2:
            try:
                assert client.infer(name)[1] == 8
            except grpc.RpcError as exc:
                cold_errors.append(f"{name}: {exc.code()} {exc.details()}")
    finally:
        traffic.stop.set()
        hot.join(30)
        second.close()
    assert traffic.answers and all(a[2] == 8 for a in traffic.answers)
    errors = traffic.errors + cold_errors
    assert not errors, f"{len(errors)} requests failed: {errors[:3]}"
