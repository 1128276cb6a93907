"""The real operator process against the emulated Kubernetes API and a real etcd.

The test plays the user (kubectl apply/delete, as in the tutorial, seeds/003) and the
routers (writing copy states into the model records and promoting vmodels in etcd).
Each test uses its own namespace, except the tutorial, which uses the operator's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client as kclient
from kubernetes import config as kconfig

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.kv import KVStore
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord, VModelRecord
from mmesh.operator.kube import Kube
from tests.integration.operator.conftest import OPERATOR_NAMESPACE, OperatorProc

pytestmark = pytest.mark.timeout(60)

SERVICE = "modelmesh-serving"
T = TypeVar("T")

# The tutorial's InferenceService (seeds/003), verbatim.
TUTORIAL_ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-sklearn-isvc
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storage:
        key: localMinIO
        path: sklearn/mnist-svm.joblib
"""


def isvc_yaml(name: str, model: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"},
        },
        "spec": {"predictor": {"model": model}},
    }
    return json.dumps(doc)


SKLEARN = {"modelFormat": {"name": "sklearn"}, "storage": {"key": "s3", "path": "m/a.joblib"}}


# ---------------------------------------------------------------- helpers


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float = 10.0) -> T:
    """Poll `check` until it returns something truthy; fail with its last error."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {last}")
        await asyncio.sleep(0.05)


class Cluster:
    """What a test needs: kubectl, object reads, the etcd records of a namespace."""

    def __init__(self, operator: OperatorProc, kv: KVStore) -> None:
        self.operator = operator
        self.api = operator.api
        api_client = kconfig.new_client_from_config(  # type: ignore[attr-defined,no-untyped-call]
            config_file=str(self.api.kubeconfig)
        )
        self.kube = Kube(api_client)
        self.custom = kclient.CustomObjectsApi(api_client)
        self.kv = kv

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.api.kubectl(*args, stdin=stdin, check=check)

    def apply(self, namespace: str, manifest: str) -> None:
        """Apply into `namespace`, first made a ModelMesh one (`modelmesh-enabled: "true"`)."""
        self.namespace(namespace)
        self.kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", stdin=manifest)

    def namespace(self, name: str, *, enabled: bool = True) -> None:
        labels = {"modelmesh-enabled": "true"} if enabled else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }
        self.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(doc))

    def layout(self, namespace: str) -> KeyLayout:
        return KeyLayout(f"{self.operator.root_prefix}/mm_ns/{namespace}", SERVICE)

    async def isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                obj = self.custom.get_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
                )
            except kclient.exceptions.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return cast(dict[str, Any], obj)

        return await asyncio.to_thread(read)

    async def status(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await self.isvc(namespace, name)
        assert obj is not None, f"{namespace}/{name} is gone"
        return dict(obj.get("status") or {})

    def event_reasons(self, namespace: str, kind: str, name: str) -> set[str]:
        """The reasons of the v1 Events about one object (`kubectl get events`)."""
        listed = json.loads(self.kubectl("get", "events", "-n", namespace, "-o", "json"))
        return {
            str(e.get("reason"))
            for e in listed.get("items") or []
            if (e.get("involvedObject", {}).get("kind"), e["involvedObject"].get("name"))
            == (kind, name)
        }

    async def vmodel(self, namespace: str, name: str) -> VModelRecord | None:
        item = await self.kv.get(self.layout(namespace).vmodel_key(VModelId(name)))
        return None if item is None else VModelRecord.from_json(item.value)

    async def model(self, namespace: str, model_id: str) -> ModelRecord | None:
        item = await self.kv.get(self.layout(namespace).model_key(ModelId(model_id)))
        return None if item is None else ModelRecord.from_json(item.value)

    async def registry_keys(self, namespace: str) -> list[str]:
        prefix = self.layout(namespace).base
        items, _ = await self.kv.range_prefix(prefix)
        return [i.key[len(prefix) :] for i in items]

    async def update_model(self, namespace: str, model_id: str, change: Any) -> None:
        """Read-modify-write a model record, as a router does (CAS)."""
        key = self.layout(namespace).model_key(ModelId(model_id))
        while True:
            item = await self.kv.get(key)
            assert item is not None, f"no model record {key}"
            record = change(ModelRecord.from_json(item.value))
            if await self.kv.put_if(key, record.to_json(), mod_revision=item.mod_revision):
                return

    async def mark_loaded(self, namespace: str, model_id: str, pod: str = "pod-1") -> None:
        now = int(time.time() * 1000)
        await self.update_model(
            namespace, model_id, lambda r: r.with_copy_loaded(InstanceId(pod), now)
        )

    async def promote(self, namespace: str, name: str) -> None:
        """What the routers do once the target is loaded: amid = tmid, old model deleted."""
        key = self.layout(namespace).vmodel_key(VModelId(name))
        item = await self.kv.get(key)
        assert item is not None
        old = VModelRecord.from_json(item.value)
        assert await self.kv.put_if(
            key, old.with_target_active().to_json(), mod_revision=item.mod_revision
        )
        await self.kv.delete(self.layout(namespace).model_key(old.active_model))


@pytest.fixture
async def cluster(operator: OperatorProc) -> AsyncIterator[Cluster]:
    kv = await EtcdKV.connect(EtcdConnection.from_endpoint(operator.etcd.endpoint))
    try:
        yield Cluster(operator, kv)
    finally:
        await kv.close()


def condition(status: dict[str, Any], kind: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


# ---------------------------------------------------------------- tests


async def test_tutorial_inference_service_becomes_ready(cluster: Cluster) -> None:
    ns, name = OPERATOR_NAMESPACE, "example-sklearn-isvc"
    cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=TUTORIAL_ISVC)

    # registered: vmodel -> <name>__isvc-<10 hex>, active = target, owner isvc
    vmodel = await eventually(lambda: cluster.vmodel(ns, name))
    model_id = vmodel.target_model
    assert model_id.startswith(f"{name}__isvc-") and len(model_id) == len(name) + 17
    assert (vmodel.active_model, vmodel.owner) == (model_id, "isvc")
    model = await cluster.model(ns, model_id)
    assert model is not None
    assert (model.model_type, model.model_path, model.auto_delete) == (
        "mt:sklearn",
        "sklearn/mnist-svm.joblib",
        True,
    )
    assert json.loads(model.encoded_key or "") == {
        "storage_key": "localMinIO",
        "model_type": {"name": "sklearn"},
    }

    # the runtime Deployments (mlserver scaled up for the model) and the Service
    async def deployments() -> dict[str, Any] | None:
        found = {
            d["metadata"]["name"]: d
            for d in cluster.kube.list("Deployment", ns, {"modelmesh-service": SERVICE})
        }
        mlserver = found.get("modelmesh-serving-mlserver-1.x")
        return found if len(found) == 4 and mlserver and mlserver["spec"]["replicas"] == 2 else None

    found = await eventually(deployments)
    mlserver = found["modelmesh-serving-mlserver-1.x"]
    containers = [c["name"] for c in mlserver["spec"]["template"]["spec"]["containers"]]
    assert containers == ["mlserver", "mlserver-adapter", "mm"]
    owner = mlserver["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ClusterServingRuntime", "mlserver-1.x")
    for other in ("ovms-1.x", "torchserve-0.x", "triton-2.x"):
        assert found[f"modelmesh-serving-{other}"]["spec"]["replicas"] == 0  # scaled to zero
    service = cluster.kube.get("Service", ns, SERVICE)
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"modelmesh-service": SERVICE}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 8033,
        "http": 8008,
        "prometheus": 2112,
    }
    secret = cluster.kube.get("Secret", ns, "model-serving-etcd")
    assert secret is not None
    etcd_doc = json.loads(base64.b64decode(secret["data"]["etcd_connection"]))
    assert etcd_doc["root_prefix"] == f"{cluster.operator.root_prefix}/mm_ns/{ns}"

    # no runtime pod yet: not ready, waiting for the runtime
    async def waiting() -> dict[str, Any] | None:
        status = await cluster.status(ns, name)
        return status if condition(status, "Ready") == "False" else None

    status = await eventually(waiting)
    assert status["modelStatus"]["lastFailureInfo"]["reason"] == "RuntimeUnhealthy"
    assert "url" not in status

    # a router reports a loaded copy -> Ready with the reference's fields
    await cluster.mark_loaded(ns, model_id)

    async def ready() -> dict[str, Any] | None:
        status = await cluster.status(ns, name)
        return status if condition(status, "Ready") == "True" else None

    status = await eventually(ready)
    url = f"grpc://modelmesh-serving.{ns}:8033"
    assert status["url"] == url
    assert status["components"]["predictor"] == {
        "url": url,
        "grpcUrl": url,
        "restUrl": f"http://modelmesh-serving.{ns}:8008",
    }
    assert status["modelStatus"] == {
        "transitionStatus": "UpToDate",
        "states": {"activeModelState": "Loaded", "targetModelState": ""},
        "copies": {"failedCopies": 0, "totalCopies": 1},
    }
    assert condition(status, "PredictorReady") == "True"

    table = cluster.kubectl("get", "isvc").splitlines()
    assert table[0].split()[:3] == ["NAME", "URL", "READY"]
    assert table[1].split()[:3] == [name, url, "True"]

    # Events on the InferenceService for what happened to it
    async def posted() -> set[str] | None:
        reasons = cluster.event_reasons(ns, "InferenceService", name)
        return reasons if {"Registered", "Loaded"} <= reasons else None

    await eventually(posted)
    listed = cluster.kubectl("get", "events", "-n", ns)
    assert "Registered" in listed and "Loaded" in listed
    assert "ScaledUp" in cluster.event_reasons(ns, "Deployment", "modelmesh-serving-mlserver-1.x")


async def test_runtime_pod_up_means_standby(cluster: Cluster) -> None:
    ns, name = "standby", "sb"
    cluster.apply(ns, isvc_yaml(name, SKLEARN))
    await eventually(lambda: cluster.vmodel(ns, name))
    instance = InstanceRecord(labels=("mt:sklearn", "pv:grpc-v2", "rt:mlserver-1.x"))
    await cluster.kv.put(cluster.layout(ns).instance_key(InstanceId("pod-a")), instance.to_json())

    async def standby() -> dict[str, Any] | None:
        status = await cluster.status(ns, name)
        states = status.get("modelStatus", {}).get("states", {})
        return status if states.get("activeModelState") == "Standby" else None

    status = await eventually(standby)
    assert condition(status, "Ready") == "True"  # registered, a pod can load it on demand
    assert "lastFailureInfo" not in status["modelStatus"]


async def test_spec_update_moves_the_vmodel_target(cluster: Cluster) -> None:
    ns, name = "update", "upd"
    cluster.apply(ns, isvc_yaml(name, SKLEARN))
    first = (await eventually(lambda: cluster.vmodel(ns, name))).active_model
    await cluster.mark_loaded(ns, first)
    await eventually(lambda: _state(cluster, ns, name, ("Loaded", "", "UpToDate")), timeout_s=10)

    changed = {**SKLEARN, "storage": {"key": "s3", "path": "m/b.joblib"}}
    cluster.apply(ns, isvc_yaml(name, changed))

    async def moved() -> VModelRecord | None:
        vmodel = await cluster.vmodel(ns, name)
        return vmodel if vmodel and vmodel.target_model != first else None

    vmodel = await eventually(moved)
    second = vmodel.target_model
    assert vmodel.active_model == first  # the operator never promotes; routers do
    new_model = await cluster.model(ns, second)
    assert new_model is not None and new_model.model_path == "m/b.joblib" and new_model.auto_delete
    status = await eventually(
        lambda: _state(cluster, ns, name, ("Loaded", "Loading", "InProgress"))
    )
    assert condition(status, "Ready") == "True"  # the active model still serves

    await cluster.mark_loaded(ns, second)
    await cluster.promote(ns, name)
    await eventually(lambda: _state(cluster, ns, name, ("Loaded", "", "UpToDate")))
    assert await cluster.model(ns, first) is None
    keys = await cluster.registry_keys(ns)
    assert keys == [f"registry/{second}", f"vmodels/{name}"]


async def _state(
    cluster: Cluster, ns: str, name: str, want: tuple[str, str, str]
) -> dict[str, Any] | None:
    status = await cluster.status(ns, name)
    model_status = status.get("modelStatus", {})
    states = model_status.get("states", {})
    got = (
        states.get("activeModelState"),
        states.get("targetModelState"),
        model_status.get("transitionStatus"),
    )
    assert got == want, f"status is {got}, want {want}"
    return status


async def test_delete_removes_the_records(cluster: Cluster) -> None:
    ns, name = "delete", "gone"
    cluster.apply(ns, isvc_yaml(name, SKLEARN))
    vmodel = await eventually(lambda: cluster.vmodel(ns, name))
    obj = await cluster.isvc(ns, name)
    assert obj is not None and obj["metadata"]["finalizers"] == [
        "serving.kserve.io/mmesh-finalizer"
    ]

    cluster.kubectl("delete", "-n", ns, "isvc", name, "--wait=false")

    async def gone() -> bool:
        return await cluster.isvc(ns, name) is None and not await cluster.registry_keys(ns)

    await eventually(gone)
    assert await cluster.model(ns, vmodel.active_model) is None


@pytest.mark.parametrize(
    ("name", "model", "reason"),
    [
        (
            "both-uri-and-path",
            {**SKLEARN, "storageUri": "s3://bucket/m/a.joblib"},
            "InvalidPredictorSpec",
        ),
        (
            "unknown-format",
            {"modelFormat": {"name": "no-such-format"}, "storage": {"path": "m/x"}},
            "NoSupportingRuntime",
        ),
        ("unknown-runtime", {**SKLEARN, "runtime": "no-such-runtime"}, "RuntimeNotRecognized"),
    ],
)
async def test_bad_inference_services_get_a_clear_status(
    cluster: Cluster, name: str, model: dict[str, Any], reason: str
) -> None:
    ns = "bad"
    cluster.apply(ns, isvc_yaml(name, model))

    async def failed() -> dict[str, Any] | None:
        status = await cluster.status(ns, name)
        info = status.get("modelStatus", {}).get("lastFailureInfo", {})
        return status if info.get("reason") == reason else None

    status = await eventually(failed)
    assert condition(status, "Ready") == "False"
    invalid = {reason} if reason == "InvalidPredictorSpec" else set()  # caught at registration
    await eventually(lambda: _has_events(cluster, ns, name, {"FailedToLoad", *invalid}))
    assert status["modelStatus"]["states"]["activeModelState"] == "FailedToLoad"
    message = status["modelStatus"]["lastFailureInfo"]["message"]
    if reason == "InvalidPredictorSpec":
        assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
        assert "storageUri" in message
        assert await cluster.vmodel(ns, name) is None  # nothing registered
    else:
        assert "no-such" in message or "mt:no-such-format" in message
        assert await cluster.vmodel(ns, name) is not None  # placed once a runtime appears


async def _has_events(cluster: Cluster, ns: str, name: str, reasons: set[str]) -> bool:
    found = await asyncio.to_thread(cluster.event_reasons, ns, "InferenceService", name)
    assert reasons <= found, f"events {found}, want {reasons}"
    return True


async def test_restart_neither_duplicates_nor_loses_registrations(cluster: Cluster) -> None:
    ns = "restart"
    for name in ("keep", "drop"):
        cluster.apply(ns, isvc_yaml(name, SKLEARN))
    await eventually(lambda: cluster.vmodel(ns, "keep"))
    await eventually(lambda: cluster.vmodel(ns, "drop"))
    before, _ = await cluster.kv.range_prefix(cluster.layout(ns).base)

    cluster.operator.stop()
    cluster.kubectl("delete", "-n", ns, "isvc", "drop", "--wait=false")  # finalizer holds it
    cluster.apply(ns, isvc_yaml("late", SKLEARN))
    cluster.operator.start()

    await eventually(lambda: cluster.vmodel(ns, "late"))

    async def dropped() -> bool:
        return await cluster.isvc(ns, "drop") is None and await cluster.vmodel(ns, "drop") is None

    await eventually(dropped)
    await asyncio.sleep(0.5)  # resume handlers done; give a stray write the chance to show
    after, _ = await cluster.kv.range_prefix(cluster.layout(ns).base)
    kept = {i.key: i.mod_revision for i in before if "/keep" in i.key or "keep__" in i.key}
    assert kept and {i.key: i.mod_revision for i in after if i.key in kept} == kept  # untouched
    names = sorted(k.rsplit("/", 1)[1].split("__")[0] for k in await cluster.registry_keys(ns))
    assert names == ["keep", "keep", "late", "late"]  # one model + one vmodel each


@pytest.mark.timeout(150)  # three config changes, each a reconcile of every namespace
async def test_config_map_reload_and_scale_to_zero(cluster: Cluster) -> None:
    ns, name = "config", "cfg"
    cluster.apply(ns, isvc_yaml(name, SKLEARN))
    deployment = "modelmesh-serving-mlserver-1.x"

    async def replicas(want: int) -> bool:
        found = await asyncio.to_thread(cluster.kube.get, "Deployment", ns, deployment)
        return found is not None and found["spec"]["replicas"] == want

    await eventually(lambda: replicas(2), 30)
    config = "podsPerRuntime: 1\nscaleToZero:\n  gracePeriodSeconds: 0\n"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-serving-config", "namespace": OPERATOR_NAMESPACE},
        "data": {"config.yaml": config},
    }
    cluster.apply(OPERATOR_NAMESPACE, json.dumps(config_map))
    await eventually(lambda: replicas(1), 30)

    config_map["data"] = {"config.yaml": "podsPerRuntime: -3\n"}  # refused, nothing changes
    cluster.apply(OPERATOR_NAMESPACE, json.dumps(config_map))

    async def refused() -> bool:
        found = await asyncio.to_thread(
            cluster.event_reasons, OPERATOR_NAMESPACE, "ConfigMap", "model-serving-config"
        )
        assert "InvalidConfig" in found, f"events {found}"
        return True

    await eventually(refused, 30)
    assert await replicas(1)
    cluster.kubectl("delete", "-n", ns, "isvc", name, "--wait=false")
    await eventually(lambda: replicas(0), 30)

    async def scaled_events() -> bool:
        found = await asyncio.to_thread(cluster.event_reasons, ns, "Deployment", deployment)
        assert {"ScaledUp", "ScaledToZero"} <= found, f"events {found}"
        return True

    await eventually(scaled_events)


async def test_only_modelmesh_enabled_namespaces_are_managed(cluster: Cluster) -> None:
    ns, name = "not-yet", "later"
    cluster.namespace(ns, enabled=False)
    cluster.kubectl(
        "apply", "--validate=false", "-n", ns, "-f", "-", stdin=isvc_yaml(name, SKLEARN)
    )
    await asyncio.sleep(1.5)
    assert await cluster.vmodel(ns, name) is None  # not a ModelMesh namespace: left alone
    assert cluster.kube.get("Deployment", ns, "modelmesh-serving-mlserver-1.x") is None

    cluster.namespace(ns, enabled=True)  # label it: the operator picks it up
    await eventually(lambda: cluster.vmodel(ns, name))

    async def deployed() -> bool:
        found = await asyncio.to_thread(
            cluster.kube.get, "Deployment", ns, "modelmesh-serving-mlserver-1.x"
        )
        return found is not None and found["spec"]["replicas"] > 0  # scaled up for the model

    await eventually(deployed)
    await eventually(lambda: cluster.status(ns, name))
