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
runtime_validation.py, the replica count in scaling.py. Callers: the kopf runtime handlers,
which apply the manifest and scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

from mmesh.operator.errors import InvalidRuntime
from mmesh.operator.naming import deployment_name
from mmesh.operator.podlayout import (
    ADAPTER_PORT,
    ADAPTER_SUFFIX,
    DEFAULT_RUNTIME_PORT,
    DEFAULT_VMODEL_OWNER,
    DOMAIN_SOCKET_VOLUME,
    ETCD_CONNECTION_KEY,
    ETCD_DIR,
    ETCD_VOLUME,
    INTERNAL_PORT,
    KV_STORE_PREFIX,
    MAX_SURGE,
    MAX_UNAVAILABLE,
    MM_CONTAINER,
    MODELS_DIR,
    MODELS_VOLUME,
    PRESTOP_PORT,
    PROBE_PORT,
    PULLER_CONTAINER,
    PULLER_PORT,
    PVC_MOUNTS_DIR,
    STORAGE_CONFIG_DIR,
    STORAGE_CONFIG_VOLUME,
    TERMINATION_GRACE_PERIOD_S,
    TLS_DIR,
    TLS_VOLUME,
)
from mmesh.operator.quantities import format_bytes, parse_quantity
from mmesh.operator.resources import (
    MAX_LOADING_CONCURRENCY_ANNOTATION,
    PER_MODEL_CONCURRENCY_ANNOTATION,
    BuiltInAdapter,
    OwnerReference,
    ServingRuntime,
)
from mmesh.operator.runtime_selection import mm_labels_value, runtime_labels
from mmesh.operator.runtime_validation import check_runtime
from mmesh.operator.service import (
    GRPC_PORT_NAME,
    HTTP_PORT_NAME,
    MANAGED_LABELS,
    PROMETHEUS_PORT_NAME,
    SERVICE_LABEL,
)
from mmesh.operator.serving_config import ImageConfig, ServingConfig

MODELS_DIR_SIZE_FACTOR = Decimal("1.5")

_DROP_ALL = {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}
_LOCKED_DOWN = {
    **_DROP_ALL,
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
}
"""Our own containers (router, adapter): the image's numeric non-root user, nothing written
outside their volumes (the adapter's temporary files go to an emptyDir at /tmp)."""
TMP_VOLUME = "tmp"

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """What the shell knows about the namespace the Deployment goes to."""

    namespace: str
    etcd_secret_name: str = "model-serving-etcd"
    """Secret holding `etcd_connection` (root prefix already set for this namespace)."""
    pvc_names: tuple[str, ...] = ()
    """PVCs to mount read-only at /pvc_mounts/<name> (storage-config pvc entries, ...)."""
    tls_has_ca: bool | None = None
    """Whether the TLS secret has a ca.crt (trusted for clients and peers too). None: not
    known; ca.crt is listed anyway and the router skips it if the secret lacks it."""


@dataclass(frozen=True, slots=True)
class _Context:
    runtime: ServingRuntime
    config: ServingConfig
    facts: NamespaceFacts
    replicas: int
    name: str

    @property
    def adapter(self) -> BuiltInAdapter | None:
        return self.runtime.built_in_adapter

    @property
    def uses_puller(self) -> bool:
        return self.adapter is None and not self.runtime.storage_helper_disabled

    @property
    def selector(self) -> dict[str, str]:
        return {SERVICE_LABEL: self.config.inference_service_name, "name": self.name}


def render_deployment(
    runtime: ServingRuntime, config: ServingConfig, facts: NamespaceFacts, *, replicas: int
) -> Manifest:
    """The Deployment for an enabled runtime; raise InvalidRuntime if it cannot be built."""
    check_runtime(runtime, config)
    name = deployment_name(runtime.name, config.inference_service_name)
    ctx = _Context(runtime, config, facts, replicas, name)
    deployment = _base(ctx)
    for step in _PIPELINE:
        deployment = step(deployment, ctx)
    return deployment


# ---------------------------------------------------------------- pipeline


def _base(ctx: _Context) -> Manifest:
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


def _pod(deployment: Manifest) -> Manifest:
    pod: Manifest = deployment["spec"]["template"]
    return pod


def _with_runtime_containers(deployment: Manifest, ctx: _Context) -> Manifest:
    """The spec's containers, each sharing /models and waiting for mm on preStop."""
    containers = _pod(deployment)["spec"]["containers"]
    for raw in ctx.runtime.containers:
        container = copy.deepcopy(dict(raw))
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("mountPath") == MODELS_DIR for m in mounts):
            mounts.append({"name": MODELS_VOLUME, "mountPath": MODELS_DIR})
        mounts.extend(_shared_mounts(ctx))
        container.setdefault("securityContext", copy.deepcopy(_DROP_ALL))
        container["lifecycle"] = _prestop_wait()
        containers.append(container)
    return deployment


def _prestop_wait() -> Manifest:
    # Blocks the container's SIGTERM until mm has moved its models elsewhere: the model
    # server must outlive the router's drain or in-flight requests fail.
    return {"preStop": {"httpGet": {"path": "/prestop", "port": PRESTOP_PORT, "scheme": "HTTP"}}}


def _shared_mounts(ctx: _Context) -> list[Manifest]:
    """PVC mounts (read-only, so pulled symlinks resolve) and the domain-socket dir."""
    mounts = [
        {"name": _pvc_volume(i), "mountPath": f"{PVC_MOUNTS_DIR}/{claim}", "readOnly": True}
        for i, claim in enumerate(_pvcs(ctx))
    ]
    socket_dir = _socket_dir(ctx.runtime)
    if socket_dir is not None:
        mounts.append({"name": DOMAIN_SOCKET_VOLUME, "mountPath": socket_dir})
    return mounts


def _pvcs(ctx: _Context) -> list[str]:
    return sorted(set(ctx.facts.pvc_names))  # sorted: a new order must not roll the pods


def _pvc_volume(index: int) -> str:
    return f"pvc-{index}"


def _socket_dir(runtime: ServingRuntime) -> str | None:
    for endpoint in (runtime.grpc_endpoint, runtime.grpc_data_endpoint):
        if endpoint is not None and endpoint.socket_path is not None:
            return str(PurePosixPath(endpoint.socket_path).parent)
    return None


def _with_adapter(deployment: Manifest, ctx: _Context) -> Manifest:
    """`<serverType>-adapter`: pulls models and drives the model server's repository API."""
    adapter = ctx.adapter
    if adapter is None:
        return deployment
    env = _adapter_env(ctx, adapter) + [dict(e) for e in adapter.env]
    container = _helper_container(ctx, adapter.server_type + ADAPTER_SUFFIX, _dedupe_env(env))
    _pod(deployment)["spec"]["containers"].append(container)
    return deployment


def _adapter_env(ctx: _Context, adapter: BuiltInAdapter) -> list[Manifest]:
    runtime = ctx.runtime
    env = [
        _env("ADAPTER_SERVER_TYPE", adapter.server_type),
        _env("ADAPTER_PORT", _adapter_port(runtime)),
        _env("RUNTIME_PORT", adapter.runtime_management_port or _data_port(runtime)),
    ]
    if runtime.grpc_data_endpoint is not None:
        env.append(_env("RUNTIME_DATA_ENDPOINT", _endpoint_text(runtime)))
    env.append(_container_memory_request(adapter.server_type))
    if adapter.mem_buffer_bytes is not None:
        env.append(_env("MEM_BUFFER_BYTES", adapter.mem_buffer_bytes))
    if adapter.model_loading_timeout_millis is not None:
        env.append(_env("LOADTIME_TIMEOUT", adapter.model_loading_timeout_millis))
    env.append(_env("USE_EMBEDDED_PULLER", "true"))
    env.extend(_storage_env())
    env.extend(_concurrency_env(runtime))
    version = _image_tag(runtime, adapter.server_type)
    if version:
        env.append(_env("RUNTIME_VERSION", version))
    return env


def _container_memory_request(container: str) -> Manifest:
    # Capacity = the model server's memory request minus a buffer; the downward API keeps
    # it in step with the spec without the operator parsing quantities.
    ref = {"containerName": container, "resource": "requests.memory"}
    return {"name": "CONTAINER_MEM_REQ_BYTES", "valueFrom": {"resourceFieldRef": ref}}


def _storage_env() -> list[Manifest]:
    return [
        _env("ROOT_MODEL_DIR", MODELS_DIR),
        _env("STORAGE_CONFIG_DIR", STORAGE_CONFIG_DIR),
        _env("PVC_MOUNTS_DIR", PVC_MOUNTS_DIR),
    ]


def _concurrency_env(runtime: ServingRuntime) -> list[Manifest]:
    env = []
    names = (
        (MAX_LOADING_CONCURRENCY_ANNOTATION, "LOADING_CONCURRENCY"),
        (PER_MODEL_CONCURRENCY_ANNOTATION, "LIMIT_PER_MODEL_CONCURRENCY"),
    )
    for annotation, var in names:
        raw = runtime.meta.annotations.get(annotation)
        if raw is None:
            continue
        if not raw.strip().isdigit():
            raise InvalidRuntime(runtime.name, f"annotation {annotation} must be an integer")
        env.append(_env(var, int(raw)))
    return env


def _image_tag(runtime: ServingRuntime, container_name: str) -> str:
    for container in runtime.containers:
        if container["name"] == container_name:
            image = str(container.get("image") or "")
            last = image.rsplit("/", 1)[-1]
            return last.split("@", 1)[0].partition(":")[2]
    return ""


def _with_puller(deployment: Manifest, ctx: _Context) -> Manifest:
    """`puller` sidecar: for custom runtimes, pulls models then forwards to grpcEndpoint."""
    if not ctx.uses_puller:
        return deployment
    env = [
        _env("ADAPTER_SERVER_TYPE", PULLER_CONTAINER),
        _env("ADAPTER_PORT", PULLER_PORT),
        _env("PORT", PULLER_PORT),
        _env("MODEL_SERVER_ENDPOINT", _management_endpoint_text(ctx.runtime)),
        *_storage_env(),
    ]
    container = _helper_container(ctx, PULLER_CONTAINER, env)
    container["ports"] = [{"name": "grpc-puller", "containerPort": PULLER_PORT}]
    _pod(deployment)["spec"]["containers"].append(container)
    return deployment


def _helper_container(ctx: _Context, name: str, env: list[Manifest]) -> Manifest:
    image = ctx.config.storage_helper_image
    mounts = [
        {"name": MODELS_VOLUME, "mountPath": MODELS_DIR},
        {"name": STORAGE_CONFIG_VOLUME, "mountPath": STORAGE_CONFIG_DIR, "readOnly": True},
        *_shared_mounts(ctx),
    ]
    mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    container: Manifest = {"name": name, **_image_fields(image), "env": env}
    container["resources"] = ctx.config.storage_helper_resources.to_manifest()
    container["volumeMounts"] = mounts
    container["securityContext"] = copy.deepcopy(_LOCKED_DOWN)
    container["lifecycle"] = _prestop_wait()
    return container


def _image_fields(image: ImageConfig) -> Manifest:
    fields: Manifest = {"image": image.reference, "imagePullPolicy": "IfNotPresent"}
    if image.command:
        fields["command"] = list(image.command)
    return fields


def _with_mm(deployment: Manifest, ctx: _Context) -> Manifest:
    """The router: external gRPC/REST/metrics ports, probes, etcd, labels."""
    config = ctx.config
    container: Manifest = {
        "name": MM_CONTAINER,
        **_image_fields(config.model_mesh_image),
        "env": _dedupe_env(_mm_env(ctx)),
        "ports": _mm_ports(config),
        "readinessProbe": _probe("/ready", period_s=5, timeout_s=1, failures=3),
        "livenessProbe": _probe("/live", period_s=30, timeout_s=5, failures=2, delay_s=90),
        "resources": config.model_mesh_resources.to_manifest(),
        "securityContext": copy.deepcopy(_LOCKED_DOWN),
        "volumeMounts": _mm_mounts(ctx),
    }
    _pod(deployment)["spec"]["containers"].append(container)
    return deployment


def _mm_env(ctx: _Context) -> list[Manifest]:
    config, runtime = ctx.config, ctx.runtime
    labels = runtime_labels(runtime, rest_enabled=config.rest_proxy.enabled)
    env = [
        _env("MM_SERVICE_NAME", config.inference_service_name),
        _env("MM_SVC_GRPC_PORT", config.inference_service_port),
        _env("MM_INTERNAL_GRPC_PORT", INTERNAL_PORT),
        _field_env("WKUBE_POD_NAME", "metadata.name"),
        _field_env("WKUBE_POD_IPADDR", "status.podIP"),
        _field_env("MM_LOCATION", "status.hostIP"),
        # Containers share the pod's network; the Service and peers reach mm from outside.
        _env("MM_BIND_HOST", "0.0.0.0"),
        _env("KV_STORE", f"etcd:{ETCD_DIR}/{ETCD_CONNECTION_KEY}"),
        _env("MM_METRICS", _metrics_value(config)),
        _env("SHUTDOWN_TIMEOUT_MS", TERMINATION_GRACE_PERIOD_S * 1000),
        *_internal_endpoint_env(ctx),
        _env("MM_SVC_GRPC_MAX_MSG_SIZE", config.grpc_max_message_size_bytes),
        _env("MM_KVSTORE_PREFIX", KV_STORE_PREFIX),
        _env("MM_DEFAULT_VMODEL_OWNER", DEFAULT_VMODEL_OWNER),
        _env("MM_LABELS", mm_labels_value(labels)),
        _env("MM_PROBE_PORT", PROBE_PORT),
        _env("REST_PROXY_LISTEN_PORT", config.rest_proxy.port if config.rest_proxy.enabled else 0),
        _env("MM_LOG_EACH_INVOKE", "true" if config.enable_access_logging else "false"),
    ]
    if config.payload_processors:
        env.append(_env("MM_PAYLOAD_PROCESSORS", " ".join(config.payload_processors)))
    env.extend(_tls_env(ctx))
    env.extend({"name": e.name, "value": e.value} for e in config.internal_model_mesh_env_vars)
    return env


def _metrics_value(config: ServingConfig) -> str:
    metrics = config.metrics
    if not metrics.enabled:
        return "disabled"
    return f"prometheus:port={metrics.port};scheme={metrics.scheme}"


def _internal_endpoint_env(ctx: _Context) -> list[Manifest]:
    runtime = ctx.runtime
    env: list[Manifest] = []
    management = runtime.grpc_endpoint
    if ctx.uses_puller:
        env.append(_env("INTERNAL_GRPC_PORT", PULLER_PORT))
    elif management is not None and management.socket_path is not None:
        env.append(_env("INTERNAL_GRPC_SOCKET_PATH", management.socket_path))
    else:
        env.append(_env("INTERNAL_GRPC_PORT", _adapter_port(runtime)))
    data = runtime.grpc_data_endpoint
    if data is not None and data.socket_path is not None:
        env.append(_env("INTERNAL_SERVING_GRPC_SOCKET_PATH", data.socket_path))
    elif data is not None or ctx.adapter is not None:
        # Without a data endpoint the router would send inference to INTERNAL_GRPC_PORT,
        # which for a built-in runtime is the adapter, not the model server.
        env.append(_env("INTERNAL_SERVING_GRPC_PORT", _serving_port(ctx)))
    elif ctx.uses_puller:
        # INTERNAL_GRPC_PORT is the puller, which serves no inference: a custom runtime
        # without a data endpoint answers inference on its own grpcEndpoint.
        if management is not None and management.socket_path is not None:
            env.append(_env("INTERNAL_SERVING_GRPC_SOCKET_PATH", management.socket_path))
        else:
            env.append(_env("INTERNAL_SERVING_GRPC_PORT", _adapter_port(runtime)))
    return env


def _serving_port(ctx: _Context) -> int:
    data = ctx.runtime.grpc_data_endpoint
    if data is not None and data.port:
        return data.port
    adapter = ctx.adapter
    if adapter is not None and adapter.runtime_management_port:
        return adapter.runtime_management_port
    return DEFAULT_RUNTIME_PORT


def _tls_env(ctx: _Context) -> list[Manifest]:
    tls = ctx.config.tls
    if not tls.enabled:
        return []
    env = [
        _env("MM_TLS_KEY_CERT_PATH", f"{TLS_DIR}/tls.crt"),
        _env("MM_TLS_PRIVATE_KEY_PATH", f"{TLS_DIR}/tls.key"),
    ]
    if tls.client_auth:
        env.append(_env("MM_TLS_CLIENT_AUTH", tls.client_auth.upper()))
    # Unlike the reference, the trust list is set without clientAuth too: pod-to-pod
    # traffic is mutual TLS either way, and peers are verified against it.
    trust = [f"{TLS_DIR}/tls.crt"]
    if ctx.facts.tls_has_ca is not False:
        trust.append(f"{TLS_DIR}/ca.crt")
    env.append(_env("MM_TLS_TRUST_CERT_PATH", ",".join(trust)))
    return env


def _mm_ports(config: ServingConfig) -> list[Manifest]:
    ports = [{"name": GRPC_PORT_NAME, "containerPort": config.inference_service_port}]
    if config.rest_proxy.enabled:
        ports.append({"name": HTTP_PORT_NAME, "containerPort": config.rest_proxy.port})
    if config.metrics.enabled:
        ports.append({"name": PROMETHEUS_PORT_NAME, "containerPort": config.metrics.port})
    return ports


def _probe(
    path: str, *, period_s: int, timeout_s: int, failures: int, delay_s: int = 0
) -> Manifest:
    probe: Manifest = {"httpGet": {"path": path, "port": PROBE_PORT, "scheme": "HTTP"}}
    if delay_s:
        probe["initialDelaySeconds"] = delay_s
    probe |= {"periodSeconds": period_s, "timeoutSeconds": timeout_s, "failureThreshold": failures}
    return probe


def _mm_mounts(ctx: _Context) -> list[Manifest]:
    mounts = [{"name": ETCD_VOLUME, "mountPath": ETCD_DIR, "readOnly": True}]
    if ctx.config.tls.enabled:
        mounts.append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
    socket_dir = _socket_dir(ctx.runtime)
    if socket_dir is not None:
        mounts.append({"name": DOMAIN_SOCKET_VOLUME, "mountPath": socket_dir})
    return mounts


def _with_volumes(deployment: Manifest, ctx: _Context) -> Manifest:
    volumes = _pod(deployment)["spec"]["volumes"]
    volumes.append({"name": MODELS_VOLUME, "emptyDir": _models_dir_source(ctx.runtime)})
    if ctx.adapter is not None or ctx.uses_puller:
        secret = {"secretName": ctx.config.storage_secret_name, "defaultMode": 420}
        volumes.append({"name": STORAGE_CONFIG_VOLUME, "secret": secret})
    volumes.append({"name": ETCD_VOLUME, "secret": _secret(ctx.facts.etcd_secret_name)})
    if ctx.config.tls.enabled:
        volumes.append({"name": TLS_VOLUME, "secret": _secret(ctx.config.tls.secret_name)})
    if ctx.adapter is not None or ctx.uses_puller:
        volumes.append({"name": TMP_VOLUME, "emptyDir": {}})
    if _socket_dir(ctx.runtime) is not None:
        volumes.append({"name": DOMAIN_SOCKET_VOLUME, "emptyDir": {}})
    for i, claim in enumerate(_pvcs(ctx)):
        claim_ref = {"claimName": claim, "readOnly": True}
        volumes.append({"name": _pvc_volume(i), "persistentVolumeClaim": claim_ref})
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


def _with_pod_metadata(deployment: Manifest, ctx: _Context) -> Manifest:
    """Pod labels/annotations: runtime spec > config > template; selector labels always win."""
    metadata = _pod(deployment)["metadata"]
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


def _with_pod_spec_passthrough(deployment: Manifest, ctx: _Context) -> Manifest:
    """Scheduling and pull settings from the runtime spec, and the config's service account."""
    spec = _pod(deployment)["spec"]
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


def _merged_pull_secrets(ctx: _Context) -> list[Manifest]:
    names = [s.name for s in ctx.config.image_pull_secrets]
    names += [str(s.get("name")) for s in ctx.runtime.image_pull_secrets if s.get("name")]
    return [{"name": n} for n in dict.fromkeys(names)]


def _with_mm_last(deployment: Manifest, ctx: _Context) -> Manifest:
    # Kubernetes pulls images and starts containers in order, so putting mm last lets the
    # model server and adapter start first; mm then finds its runtime ready sooner instead
    # of burning its startup timeout.
    containers = _pod(deployment)["spec"]["containers"]
    containers.sort(key=lambda c: c["name"] == MM_CONTAINER)
    return deployment


_PIPELINE: tuple[Callable[[Manifest, _Context], Manifest], ...] = (
    _with_runtime_containers,
    _with_adapter,
    _with_puller,
    _with_mm,
    _with_volumes,
    _with_pod_metadata,
    _with_pod_spec_passthrough,
    _with_mm_last,
)


# ---------------------------------------------------------------- small helpers


def _env(name: str, value: object) -> Manifest:
    return {"name": name, "value": str(value)}


def _field_env(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _dedupe_env(env: Iterable[Manifest]) -> list[Manifest]:
    """A later entry replaces an earlier one of the same name, keeping the first position."""
    by_name: dict[str, Manifest] = {}
    for entry in env:
        by_name[str(entry["name"])] = entry
    return list(by_name.values())


def _adapter_port(runtime: ServingRuntime) -> int:
    endpoint = runtime.grpc_endpoint
    return endpoint.port if endpoint is not None and endpoint.port else ADAPTER_PORT


def _data_port(runtime: ServingRuntime) -> int:
    endpoint = runtime.grpc_data_endpoint
    return endpoint.port if endpoint is not None and endpoint.port else DEFAULT_RUNTIME_PORT


def _endpoint_text(runtime: ServingRuntime) -> str:
    endpoint = runtime.grpc_data_endpoint
    if endpoint is None:
        return ""
    return f"unix:{endpoint.socket_path}" if endpoint.socket_path else f"port:{endpoint.port}"


def _management_endpoint_text(runtime: ServingRuntime) -> str:
    endpoint = runtime.grpc_endpoint
    if endpoint is not None and endpoint.socket_path:
        return f"unix:{endpoint.socket_path}"
    return f"port:{_adapter_port(runtime)}"
