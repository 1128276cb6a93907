"""Pure: the pieces every container of a runtime pod is built from.

`PodContext` carries the runtime, the config and the namespace facts through the
Deployment pipeline (deployment.py); the helpers build env entries, the shared mounts
(PVCs, the domain-socket directory), the preStop hook and the endpoint texts that
deployment.py, sidecars.py and router_container.py share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from mmesh.operator.podlayout import (
    ADAPTER_PORT,
    DEFAULT_RUNTIME_PORT,
    DOMAIN_SOCKET_VOLUME,
    PRESTOP_PORT,
    PVC_MOUNTS_DIR,
)
from mmesh.operator.resources import BuiltInAdapter, ServingRuntime
from mmesh.operator.service import SERVICE_LABEL
from mmesh.operator.serving_config import ImageConfig, ServingConfig

DROP_ALL = {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}

LOCKED_DOWN = {
    **DROP_ALL,
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
class PodContext:
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


def pod_of(deployment: Manifest) -> Manifest:
    pod: Manifest = deployment["spec"]["template"]
    return pod


def prestop_wait() -> Manifest:
    # Blocks the container's SIGTERM until mm has moved its models elsewhere: the model
    # server must outlive the router's drain or in-flight requests fail.
    return {"preStop": {"httpGet": {"path": "/prestop", "port": PRESTOP_PORT, "scheme": "HTTP"}}}


def shared_mounts(ctx: PodContext) -> list[Manifest]:
    """PVC mounts (read-only, so pulled symlinks resolve) and the domain-socket dir."""
    mounts = [
        {"name": pvc_volume(i), "mountPath": f"{PVC_MOUNTS_DIR}/{claim}", "readOnly": True}
        for i, claim in enumerate(pvc_claims(ctx))
    ]
    socket_dir = socket_dir_of(ctx.runtime)
    if socket_dir is not None:
        mounts.append({"name": DOMAIN_SOCKET_VOLUME, "mountPath": socket_dir})
    return mounts


def pvc_claims(ctx: PodContext) -> list[str]:
    return sorted(set(ctx.facts.pvc_names))  # sorted: a new order must not roll the pods


def pvc_volume(index: int) -> str:
    return f"pvc-{index}"


def socket_dir_of(runtime: ServingRuntime) -> str | None:
    for endpoint in (runtime.grpc_endpoint, runtime.grpc_data_endpoint):
        if endpoint is not None and endpoint.socket_path is not None:
            return str(PurePosixPath(endpoint.socket_path).parent)
    return None


def image_fields(image: ImageConfig) -> Manifest:
    fields: Manifest = {"image": image.reference, "imagePullPolicy": "IfNotPresent"}
    if image.command:
        fields["command"] = list(image.command)
    return fields


def env_var(name: str, value: object) -> Manifest:
    return {"name": name, "value": str(value)}


def field_env_var(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def dedupe_env(env: Iterable[Manifest]) -> list[Manifest]:
    """A later entry replaces an earlier one of the same name, keeping the first position."""
    by_name: dict[str, Manifest] = {}
    for entry in env:
        by_name[str(entry["name"])] = entry
    return list(by_name.values())


def adapter_port(runtime: ServingRuntime) -> int:
    endpoint = runtime.grpc_endpoint
    return endpoint.port if endpoint is not None and endpoint.port else ADAPTER_PORT


def data_port(runtime: ServingRuntime) -> int:
    endpoint = runtime.grpc_data_endpoint
    return endpoint.port if endpoint is not None and endpoint.port else DEFAULT_RUNTIME_PORT


def data_endpoint_text(runtime: ServingRuntime) -> str:
    endpoint = runtime.grpc_data_endpoint
    if endpoint is None:
        return ""
    return f"unix:{endpoint.socket_path}" if endpoint.socket_path else f"port:{endpoint.port}"


def management_endpoint_text(runtime: ServingRuntime) -> str:
    endpoint = runtime.grpc_endpoint
    if endpoint is not None and endpoint.socket_path:
        return f"unix:{endpoint.socket_path}"
    return f"port:{adapter_port(runtime)}"
