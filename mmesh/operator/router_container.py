"""Pure: the `mm` container (the router) of a runtime pod, as a Deployment pipeline step.

`with_mm` adds the router with its external gRPC/REST/metrics ports, probes, etcd and TLS
mounts, and the environment mmesh/router/settings.py reads (MM_LABELS, the internal
endpoints of the model server). Callers: deployment.py.
"""

from __future__ import annotations

import copy

from mmesh.operator.pod_parts import (
    LOCKED_DOWN,
    Manifest,
    PodContext,
    adapter_port,
    dedupe_env,
    env_var,
    field_env_var,
    image_fields,
    pod_of,
    socket_dir_of,
)
from mmesh.operator.podlayout import (
    DEFAULT_RUNTIME_PORT,
    DEFAULT_VMODEL_OWNER,
    DOMAIN_SOCKET_VOLUME,
    ETCD_CONNECTION_KEY,
    ETCD_DIR,
    ETCD_VOLUME,
    INTERNAL_PORT,
    KV_STORE_PREFIX,
    MM_CONTAINER,
    PROBE_PORT,
    PULLER_PORT,
    TERMINATION_GRACE_PERIOD_S,
    TLS_DIR,
    TLS_VOLUME,
)
from mmesh.operator.runtime_selection import mm_labels_value, runtime_labels
from mmesh.operator.service import GRPC_PORT_NAME, HTTP_PORT_NAME, PROMETHEUS_PORT_NAME
from mmesh.operator.serving_config import ServingConfig


def with_mm(deployment: Manifest, ctx: PodContext) -> Manifest:
    """The router: external gRPC/REST/metrics ports, probes, etcd, labels."""
    config = ctx.config
    container: Manifest = {
        "name": MM_CONTAINER,
        **image_fields(config.model_mesh_image),
        "env": dedupe_env(_mm_env(ctx)),
        "ports": _mm_ports(config),
        "readinessProbe": _probe("/ready", period_s=5, timeout_s=1, failures=3),
        "livenessProbe": _probe("/live", period_s=30, timeout_s=5, failures=2, delay_s=90),
        "resources": config.model_mesh_resources.to_manifest(),
        "securityContext": copy.deepcopy(LOCKED_DOWN),
        "volumeMounts": _mm_mounts(ctx),
    }
    pod_of(deployment)["spec"]["containers"].append(container)
    return deployment


def _mm_env(ctx: PodContext) -> list[Manifest]:
    config, runtime = ctx.config, ctx.runtime
    labels = runtime_labels(runtime, rest_enabled=config.rest_proxy.enabled)
    env = [
        env_var("MM_SERVICE_NAME", config.inference_service_name),
        env_var("MM_SVC_GRPC_PORT", config.inference_service_port),
        env_var("MM_INTERNAL_GRPC_PORT", INTERNAL_PORT),
        field_env_var("WKUBE_POD_NAME", "metadata.name"),
        field_env_var("WKUBE_POD_IPADDR", "status.podIP"),
        field_env_var("MM_LOCATION", "status.hostIP"),
        # The router reads this Node's zone label (mmesh.router.nodezone): the Downward API
        # cannot expose node labels.
        field_env_var("NODE_NAME", "spec.nodeName"),
        # Containers share the pod's network; the Service and peers reach mm from outside.
        env_var("MM_BIND_HOST", "0.0.0.0"),
        env_var("KV_STORE", f"etcd:{ETCD_DIR}/{ETCD_CONNECTION_KEY}"),
        env_var("MM_METRICS", _metrics_value(config)),
        env_var("SHUTDOWN_TIMEOUT_MS", TERMINATION_GRACE_PERIOD_S * 1000),
        *_internal_endpoint_env(ctx),
        env_var("MM_SVC_GRPC_MAX_MSG_SIZE", config.grpc_max_message_size_bytes),
        env_var("MM_KVSTORE_PREFIX", KV_STORE_PREFIX),
        env_var("MM_DEFAULT_VMODEL_OWNER", DEFAULT_VMODEL_OWNER),
        env_var("MM_LABELS", mm_labels_value(labels)),
        env_var("MM_PROBE_PORT", PROBE_PORT),
        env_var(
            "REST_PROXY_LISTEN_PORT", config.rest_proxy.port if config.rest_proxy.enabled else 0
        ),
        env_var("MM_LOG_EACH_INVOKE", "true" if config.enable_access_logging else "false"),
    ]
    if config.payload_processors:
        env.append(env_var("MM_PAYLOAD_PROCESSORS", " ".join(config.payload_processors)))
    if config.inference_timeout_millis:
        env.append(env_var("MM_INFERENCE_TIMEOUT_MS", config.inference_timeout_millis))
    env.extend(_tls_env(ctx))
    env.extend({"name": e.name, "value": e.value} for e in config.internal_model_mesh_env_vars)
    return env


def _metrics_value(config: ServingConfig) -> str:
    metrics = config.metrics
    if not metrics.enabled:
        return "disabled"
    per_model = ";per_model_metrics=true" if metrics.per_model_metrics else ""
    return f"prometheus:port={metrics.port};scheme={metrics.scheme}{per_model}"


def _internal_endpoint_env(ctx: PodContext) -> list[Manifest]:
    runtime = ctx.runtime
    env: list[Manifest] = []
    management = runtime.grpc_endpoint
    if ctx.uses_puller:
        env.append(env_var("INTERNAL_GRPC_PORT", PULLER_PORT))
    elif management is not None and management.socket_path is not None:
        env.append(env_var("INTERNAL_GRPC_SOCKET_PATH", management.socket_path))
    else:
        env.append(env_var("INTERNAL_GRPC_PORT", adapter_port(runtime)))
    data = runtime.grpc_data_endpoint
    if data is not None and data.socket_path is not None:
        env.append(env_var("INTERNAL_SERVING_GRPC_SOCKET_PATH", data.socket_path))
    elif data is not None or ctx.adapter is not None:
        # Without a data endpoint the router would send inference to INTERNAL_GRPC_PORT,
        # which for a built-in runtime is the adapter, not the model server.
        env.append(env_var("INTERNAL_SERVING_GRPC_PORT", _serving_port(ctx)))
    elif ctx.uses_puller:
        # INTERNAL_GRPC_PORT is the puller, which serves no inference: a custom runtime
        # without a data endpoint answers inference on its own grpcEndpoint.
        if management is not None and management.socket_path is not None:
            env.append(env_var("INTERNAL_SERVING_GRPC_SOCKET_PATH", management.socket_path))
        else:
            env.append(env_var("INTERNAL_SERVING_GRPC_PORT", adapter_port(runtime)))
    return env


def _serving_port(ctx: PodContext) -> int:
    data = ctx.runtime.grpc_data_endpoint
    if data is not None and data.port:
        return data.port
    adapter = ctx.adapter
    if adapter is not None and adapter.runtime_management_port:
        return adapter.runtime_management_port
    return DEFAULT_RUNTIME_PORT


def _tls_env(ctx: PodContext) -> list[Manifest]:
    tls = ctx.config.tls
    if not tls.enabled:
        return []
    env = [
        env_var("MM_TLS_KEY_CERT_PATH", f"{TLS_DIR}/tls.crt"),
        env_var("MM_TLS_PRIVATE_KEY_PATH", f"{TLS_DIR}/tls.key"),
    ]
    if tls.client_auth:
        env.append(env_var("MM_TLS_CLIENT_AUTH", tls.client_auth.upper()))
    # Unlike the reference, the trust list is set without clientAuth too: pod-to-pod
    # traffic is mutual TLS either way, and peers are verified against it.
    trust = [f"{TLS_DIR}/tls.crt"]
    if ctx.facts.tls_has_ca is not False:
        trust.append(f"{TLS_DIR}/ca.crt")
    env.append(env_var("MM_TLS_TRUST_CERT_PATH", ",".join(trust)))
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


def _mm_mounts(ctx: PodContext) -> list[Manifest]:
    mounts = [{"name": ETCD_VOLUME, "mountPath": ETCD_DIR, "readOnly": True}]
    if ctx.config.tls.enabled:
        mounts.append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
    socket_dir = socket_dir_of(ctx.runtime)
    if socket_dir is not None:
        mounts.append({"name": DOMAIN_SOCKET_VOLUME, "mountPath": socket_dir})
    return mounts
