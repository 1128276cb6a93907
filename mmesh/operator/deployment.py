"""Pure: a runtime (ServingRuntime / ClusterServingRuntime) -> its Deployment manifest.

`render_deployment` builds `modelmesh-serving-<runtime>` as a named pipeline of small
`_with_*` steps, each owning one aspect (the shape of modelmesh-serving's
controllers/modelmesh/modelmesh.go Apply, as pure functions). The pod holds:

1. the runtime container(s) from the spec, with the shared `/models` emptyDir;
2. `<serverType>-adapter` (mmesh's adapter, `python -m mmesh.adapter`) for a built-in
   server type, or a `puller` sidecar for a custom runtime that keeps its storage helper;
3. `mm`, the router (`python -m mmesh.router`), always last.

Environment names are the contracts the router and adapter read (mmesh/router/settings.py,
mmesh/adapter/settings.py). mmesh's router serves V2 REST itself, so there is no rest-proxy
container. The fixed names and ports are in podlayout.py, the checks that run first in
runtime_validation.py, the sidecar in sidecars.py, the router in router_container.py, the
replica count in scaling.py. Callers: the kopf runtime handlers,
which apply the manifest and scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from mmesh.operator.naming import deployment_name
from mmesh.operator.pod_parts import (
    DROP_ALL,
    TMP_VOLUME,
    Manifest,
    NamespaceFacts,
    PodContext,
    pod_of,
    prestop_wait,
    pvc_claims,
    pvc_volume,
    shared_mounts,
    socket_dir_of,
)
from mmesh.operator.podlayout import (
    DOMAIN_SOCKET_VOLUME,
    ETCD_VOLUME,
    MAX_SURGE,
    MAX_UNAVAILABLE,
    MM_CONTAINER,
    MODELS_DIR,
    MODELS_VOLUME,
    STORAGE_CONFIG_VOLUME,
    TERMINATION_GRACE_PERIOD_S,
    TLS_VOLUME,
)
from mmesh.operator.quantities import format_bytes, parse_quantity
from mmesh.operator.resources import OwnerReference, ServingRuntime
from mmesh.operator.router_container import with_mm
from mmesh.operator.runtime_validation import check_runtime
from mmesh.operator.service import MANAGED_LABELS
from mmesh.operator.serving_config import ServingConfig
from mmesh.operator.sidecars import with_adapter, with_puller

MODELS_DIR_SIZE_FACTOR = Decimal("1.5")


def render_deployment(
    runtime: ServingRuntime, config: ServingConfig, facts: NamespaceFacts, *, replicas: int
) -> Manifest:
    """The Deployment for an enabled runtime; raise InvalidRuntime if it cannot be built."""
    check_runtime(runtime, config)
    name = deployment_name(runtime.name, config.inference_service_name)
    ctx = PodContext(runtime, config, facts, replicas, name)
    deployment = _base(ctx)
    for step in _PIPELINE:
        deployment = step(deployment, ctx)
    return deployment


def _base(ctx: PodContext) -> Manifest:
    labels = {**MANAGED_LABELS, **ctx.selector}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": ctx.name,
            "namespace": ctx.facts.namespace,
            "labels": labels,
            "ownerReferences": [OwnerReference.of_runtime(ctx.runtime).to_manifest()],
        },
        "spec": {
            "replicas": ctx.replicas,
            "selector": {"matchLabels": dict(ctx.selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": MAX_SURGE, "maxUnavailable": MAX_UNAVAILABLE},
            },
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {}},
                "spec": {
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
                    "containers": [],
                    "volumes": [],
                },
            },
        },
    }


def _with_runtime_containers(deployment: Manifest, ctx: PodContext) -> Manifest:
    """The spec's containers, each sharing /models and waiting for mm on preStop."""
    containers = pod_of(deployment)["spec"]["containers"]
    for raw in ctx.runtime.containers:
        container = copy.deepcopy(dict(raw))
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("mountPath") == MODELS_DIR for m in mounts):
            mounts.append({"name": MODELS_VOLUME, "mountPath": MODELS_DIR})
        mounts.extend(shared_mounts(ctx))
        container.setdefault("securityContext", copy.deepcopy(DROP_ALL))
        container["lifecycle"] = prestop_wait()
        containers.append(container)
    return deployment


def _with_volumes(deployment: Manifest, ctx: PodContext) -> Manifest:
    volumes = pod_of(deployment)["spec"]["volumes"]
    volumes.append({"name": MODELS_VOLUME, "emptyDir": _models_dir_source(ctx.runtime)})
    if ctx.adapter is not None or ctx.uses_puller:
        secret = {"secretName": ctx.config.storage_secret_name, "defaultMode": 420}
        volumes.append({"name": STORAGE_CONFIG_VOLUME, "secret": secret})
    volumes.append({"name": ETCD_VOLUME, "secret": _secret(ctx.facts.etcd_secret_name)})
    if ctx.config.tls.enabled:
        volumes.append({"name": TLS_VOLUME, "secret": _secret(ctx.config.tls.secret_name)})
    if ctx.adapter is not None or ctx.uses_puller:
        volumes.append({"name": TMP_VOLUME, "emptyDir": {}})
    if socket_dir_of(ctx.runtime) is not None:
        volumes.append({"name": DOMAIN_SOCKET_VOLUME, "emptyDir": {}})
    for i, claim in enumerate(pvc_claims(ctx)):
        claim_ref = {"claimName": claim, "readOnly": True}
        volumes.append({"name": pvc_volume(i), "persistentVolumeClaim": claim_ref})
    volumes.extend(copy.deepcopy(dict(v)) for v in ctx.runtime.volumes)
    return deployment


def _secret(name: str) -> Manifest:
    return {"secretName": name, "defaultMode": 420}


def _models_dir_source(runtime: ServingRuntime) -> Manifest:
    """emptyDir sized 1.5x the runtime containers' memory limits (models sit on disk and in
    memory at once); unsized if any limit is missing."""
    limits = [_memory_limit(c) for c in runtime.containers]
    if not limits or any(limit is None for limit in limits):
        return {}
    total = sum(limit for limit in limits if limit is not None)
    return {"sizeLimit": format_bytes(int(total * MODELS_DIR_SIZE_FACTOR))}


def _memory_limit(container: Mapping[str, Any]) -> int | None:
    raw = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None if raw is None else parse_quantity(str(raw))


def _with_pod_metadata(deployment: Manifest, ctx: PodContext) -> Manifest:
    """Pod labels/annotations: runtime spec > config > template; selector labels always win."""
    metadata = pod_of(deployment)["metadata"]
    config, runtime = ctx.config, ctx.runtime
    if config.metrics.enabled:
        metadata["annotations"] |= {
            "prometheus.io/path": "/metrics",
            "prometheus.io/port": str(config.metrics.port),
            "prometheus.io/scheme": config.metrics.scheme,
            "prometheus.io/scrape": "true",
        }
    metadata["annotations"] |= config.runtime_pod_annotations | dict(runtime.pod_annotations)
    metadata["labels"] |= config.runtime_pod_labels | dict(runtime.pod_labels) | ctx.selector
    return deployment


def _with_pod_spec_passthrough(deployment: Manifest, ctx: PodContext) -> Manifest:
    """Scheduling and pull settings from the runtime spec, and the config's service account."""
    spec = pod_of(deployment)["spec"]
    runtime = ctx.runtime
    if ctx.config.service_account_name:
        spec["serviceAccountName"] = ctx.config.service_account_name
    if runtime.node_selector:
        spec["nodeSelector"] = dict(runtime.node_selector)
    if runtime.affinity:
        spec["affinity"] = copy.deepcopy(dict(runtime.affinity))
    if runtime.tolerations:
        spec["tolerations"] = [copy.deepcopy(dict(t)) for t in runtime.tolerations]
    secrets = _merged_pull_secrets(ctx)
    if secrets:
        spec["imagePullSecrets"] = secrets
    return deployment


def _merged_pull_secrets(ctx: PodContext) -> list[Manifest]:
    names = [s.name for s in ctx.config.image_pull_secrets]
    names += [str(s.get("name")) for s in ctx.runtime.image_pull_secrets if s.get("name")]
    return [{"name": n} for n in dict.fromkeys(names)]


def _with_mm_last(deployment: Manifest, ctx: PodContext) -> Manifest:
    # Kubernetes pulls images and starts containers in order, so putting mm last lets the
    # model server and adapter start first; mm then finds its runtime ready sooner instead
    # of burning its startup timeout.
    containers = pod_of(deployment)["spec"]["containers"]
    containers.sort(key=lambda c: c["name"] == MM_CONTAINER)
    return deployment


_PIPELINE: tuple[Callable[[Manifest, PodContext], Manifest], ...] = (
    _with_runtime_containers,
    with_adapter,
    with_puller,
    with_mm,
    _with_volumes,
    _with_pod_metadata,
    _with_pod_spec_passthrough,
    _with_mm_last,
)
