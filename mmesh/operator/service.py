"""Pure: the one Service in front of every runtime pod of a namespace, and its URLs.

`modelmesh-serving` (config `inferenceServiceName`) selects `modelmesh-service=<name>`,
a label every runtime Deployment's pods carry, so one Service spans all runtimes: any
router answers for any model and forwards to the pod that holds it. Ports: `grpc` 8033
(inference + ModelMesh API), `http` 8008 (V2 REST, served by the router itself) and
`prometheus` 2112, each targeting the container port of the same name. Headless by default
so gRPC clients can balance over pod addresses (`dns:///` + round_robin). clusterIP is
immutable, so a change of headlessness means delete and create (`needs_recreate`).
Callers: the kopf runtime/namespace handlers, status (URLs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmesh.operator.resources import OwnerReference
from mmesh.operator.serving_config import ServingConfig

SERVICE_LABEL = "modelmesh-service"
"""On runtime pods and the Service: which mesh (Service) the pod belongs to."""
OPERATOR_NAME = "mmesh-operator"
MANAGED_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/instance": OPERATOR_NAME,
    "app.kubernetes.io/managed-by": OPERATOR_NAME,
    "app.kubernetes.io/name": OPERATOR_NAME,
}
"""Labels on everything the operator creates."""
GRPC_PORT_NAME = "grpc"
HTTP_PORT_NAME = "http"
PROMETHEUS_PORT_NAME = "prometheus"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """How clients reach the mesh of one namespace."""

    grpc_url: str
    rest_url: str | None
    """None when the REST face is off."""


def endpoints(config: ServingConfig, namespace: str) -> Endpoints:
    """`grpc://<svc>.<ns>:<port>` and `http(s)://<svc>.<ns>:<rest port>`."""
    host = f"{config.inference_service_name}.{namespace}"
    rest = None
    if config.rest_proxy.enabled:
        scheme = "https" if config.tls.enabled else "http"
        rest = f"{scheme}://{host}:{config.rest_proxy.port}"
    return Endpoints(grpc_url=f"grpc://{host}:{config.inference_service_port}", rest_url=rest)


def render_service(
    config: ServingConfig, *, namespace: str, owner: OwnerReference | None = None
) -> dict[str, Any]:
    """The Service manifest; `owner` is the operator Deployment or the Namespace."""
    name = config.inference_service_name
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**MANAGED_LABELS, SERVICE_LABEL: name},
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner.to_manifest()]
    spec: dict[str, Any] = {
        "selector": {SERVICE_LABEL: name},
        "ports": _ports(config),
        "sessionAffinity": "None",
        "type": "ClusterIP",
    }
    if config.headless_service:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def _ports(config: ServingConfig) -> list[dict[str, Any]]:
    ports = [_port(GRPC_PORT_NAME, config.inference_service_port)]
    if config.rest_proxy.enabled:
        ports.append(_port(HTTP_PORT_NAME, config.rest_proxy.port))
    if config.metrics.enabled:
        ports.append(_port(PROMETHEUS_PORT_NAME, config.metrics.port))
    return ports


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": "TCP", "targetPort": name}


def is_headless(service: Mapping[str, Any]) -> bool:
    return bool(service.get("spec", {}).get("clusterIP") == "None")


def needs_recreate(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """clusterIP cannot change in place: a switch to or from headless needs a new Service."""
    return is_headless(existing) != is_headless(desired)
