"""PVC mounts and HPAs of runtime Deployments: the real operator process against the emulated
Kubernetes API (kubectl as the user), each test in its own namespace."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from tests.fixtures.procs import ROOT
from tests.integration.operator import test_operator as base
from tests.integration.operator.conftest import OPERATOR_NAMESPACE
from tests.integration.operator.test_operator import SKLEARN, Cluster, isvc_yaml

cluster = base.cluster  # the fixture
WAIT_S = 90.0
"""A namespace's first reconcile writes five objects; on a busy machine that takes a while."""


async def eventually(check: Any, timeout_s: float = WAIT_S) -> Any:
    return await base.eventually(check, timeout_s)


pytestmark = pytest.mark.timeout(400)

DEPLOYMENT = "modelmesh-serving-mlserver-1.x"
HPA = "HorizontalPodAutoscaler"


def mlserver_runtime(annotations: dict[str, str]) -> str:
    """mlserver-1.x as a namespaced ServingRuntime (it hides the cluster one) with
    `annotations`."""
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "config" / "runtimes" / "mlserver-1.x.yaml").read_text()
    )
    doc["kind"] = "ServingRuntime"
    doc["metadata"]["annotations"] = annotations
    return json.dumps(doc)


def storage_secret(entries: dict[str, dict[str, str]]) -> str:
    data = {k: base64.b64encode(json.dumps(v).encode()).decode() for k, v in entries.items()}
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "storage-config"},
        "data": data,
    }
    return json.dumps(doc)


def claim_yaml(name: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    return json.dumps(doc)


def pvc_mounts(deployment: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
    """container -> (mount path, readOnly) of each PVC volume it mounts."""
    spec = deployment["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    out: dict[str, list[tuple[str, bool]]] = {}
    for container in spec["containers"]:
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in claims:
                assert claims[mount["name"]]["readOnly"] is True
                out.setdefault(container["name"], []).append(
                    (mount["mountPath"], bool(mount.get("readOnly")))
                )
    return out


def set_config(cluster: Cluster, text: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-serving-config", "namespace": OPERATOR_NAMESPACE},
        "data": {"config.yaml": text},
    }
    cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(doc))


# ---------------------------------------------------------------- HPA


async def test_an_annotated_runtime_gets_an_hpa_that_owns_its_replicas(cluster: Cluster) -> None:
    ns = "hpa-owner"
    annotations = {
        "serving.kserve.io/autoscalerClass": "hpa",
        "serving.kserve.io/min-scale": "3",
        "serving.kserve.io/max-scale": "5",
    }
    cluster.apply(ns, mlserver_runtime(annotations))
    cluster.apply(ns, isvc_yaml("m", SKLEARN))

    async def hpa() -> dict[str, Any] | None:
        return cluster.kube.get(HPA, ns, DEPLOYMENT)

    found = await eventually(hpa)
    assert found["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": DEPLOYMENT,
    }
    assert (found["spec"]["minReplicas"], found["spec"]["maxReplicas"]) == (3, 5)
    metric = found["spec"]["metrics"][0]["resource"]
    assert metric == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    owner = found["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ServingRuntime", "mlserver-1.x")
    # a new Deployment starts at min-scale, not podsPerRuntime (2)
    deployment = cluster.kube.get("Deployment", ns, DEPLOYMENT)
    assert deployment is not None and deployment["spec"]["replicas"] == 3

    # the HPA scales the Deployment; the operator's next reconcile leaves that alone
    cluster.kubectl("patch", "deployment", DEPLOYMENT, "-n", ns, "--type=merge",
                    "-p", '{"spec": {"replicas": 4}}')  # fmt: skip
    annotations["serving.kserve.io/targetUtilizationPercentage"] = "60"
    cluster.apply(ns, mlserver_runtime(annotations))

    async def retargeted() -> bool:
        current = cluster.kube.get(HPA, ns, DEPLOYMENT) or {}
        target = current.get("spec", {}).get("metrics", [{}])[0].get("resource", {})
        return target.get("target", {}).get("averageUtilization") == 60

    await eventually(retargeted)
    deployment = cluster.kube.get("Deployment", ns, DEPLOYMENT)
    assert deployment is not None and deployment["spec"]["replicas"] == 4

    # the annotation goes: so does the HPA, and podsPerRuntime (2) applies again
    cluster.apply(ns, mlserver_runtime({}))

    async def removed() -> bool:
        gone = cluster.kube.get(HPA, ns, DEPLOYMENT) is None
        current = cluster.kube.get("Deployment", ns, DEPLOYMENT) or {}
        return gone and current.get("spec", {}).get("replicas") == 2

    await eventually(removed)


async def test_invalid_autoscaling_values_are_reported_and_defaulted(cluster: Cluster) -> None:
    ns = "hpa-invalid"
    annotations = {
        "serving.kserve.io/autoscalerClass": "hpa",
        "serving.kserve.io/metrics": "gpu",
        "serving.kserve.io/min-scale": "zero",
    }
    cluster.apply(ns, mlserver_runtime(annotations))
    cluster.apply(ns, isvc_yaml("m", SKLEARN))

    async def hpa() -> dict[str, Any] | None:
        return cluster.kube.get(HPA, ns, DEPLOYMENT)

    found = await eventually(hpa)
    assert found["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert (found["spec"]["minReplicas"], found["spec"]["maxReplicas"]) == (1, 1)

    async def reported() -> list[str]:
        listed = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json"))
        return [
            str(e.get("message"))
            for e in listed.get("items") or []
            if e.get("reason") == "InvalidAutoscaling"
            and e.get("involvedObject", {}).get("name") == "mlserver-1.x"
        ]

    (message,) = await eventually(reported)
    assert "serving.kserve.io/metrics='gpu' is not a supported metric" in message
    assert "serving.kserve.io/min-scale='zero' must be an integer >= 1; using 1" in message
    log = cluster.operator.logs()
    assert "serving.kserve.io/metrics='gpu' is not a supported metric" in log


# ---------------------------------------------------------------- PVC


async def test_storage_config_pvc_entries_are_mounted_read_only(cluster: Cluster) -> None:
    ns = "pvc-storage"
    cluster.namespace(ns)
    entries = {
        "s3": {"type": "s3", "bucket": "b"},
        "models": {"type": "pvc", "name": "shared-models"},
    }
    cluster.apply(ns, storage_secret(entries))
    cluster.apply(ns, isvc_yaml("m", SKLEARN))

    async def mounted() -> dict[str, list[tuple[str, bool]]] | None:
        deployment = cluster.kube.get("Deployment", ns, DEPLOYMENT)
        return pvc_mounts(deployment) if deployment else None

    mounts = await eventually(mounted)
    expected = [("/pvc_mounts/shared-models", True)]
    assert mounts == {"mlserver": expected, "mlserver-adapter": expected}

    # every runtime of the namespace mounts it, scaled to zero or not
    async def triton() -> list[tuple[str, bool]] | None:
        deployment = cluster.kube.get("Deployment", ns, "modelmesh-serving-triton-2.x")
        return pvc_mounts(deployment).get("triton") if deployment else None

    assert await eventually(triton) == expected

    # a new entry reaches the Deployments without any other event (the Secret is polled)
    entries["more"] = {"type": "pvc", "name": "another"}
    cluster.apply(ns, storage_secret(entries))

    async def both() -> bool:
        deployment = cluster.kube.get("Deployment", ns, DEPLOYMENT) or {}
        found = pvc_mounts(deployment).get("mlserver") if deployment else None
        return found == [("/pvc_mounts/another", True), ("/pvc_mounts/shared-models", True)]

    await eventually(both)


async def test_allow_any_pvc_mounts_a_claim_a_model_names_once_it_exists(cluster: Cluster) -> None:
    ns = "pvc-any"
    cluster.namespace(ns)
    model = {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://team-claim/sk/m.joblib"}
    set_config(cluster, "allowAnyPVC: true")
    try:
        cluster.apply(ns, isvc_yaml("m", model))

        async def deployed() -> dict[str, Any] | None:
            return cluster.kube.get("Deployment", ns, DEPLOYMENT)

        # the claim does not exist: mounting it would keep every pod of the runtime Pending
        async def looked_up() -> bool:
            return "PVC pvc-any/team-claim does not exist" in cluster.operator.logs()

        await eventually(looked_up)
        assert pvc_mounts(await eventually(deployed)) == {}

        cluster.apply(ns, claim_yaml("team-claim"))

        async def mounted() -> dict[str, list[tuple[str, bool]]] | None:
            deployment = cluster.kube.get("Deployment", ns, DEPLOYMENT)
            return pvc_mounts(deployment) if deployment else None

        mounts = await eventually(mounted)
        assert mounts["mlserver-adapter"] == [("/pvc_mounts/team-claim", True)]
        # only runtimes that can serve the model mount it
        triton = cluster.kube.get("Deployment", ns, "modelmesh-serving-triton-2.x")
        assert triton is not None and pvc_mounts(triton) == {}
    finally:
        set_config(cluster, "")
