"""Pure: the runtime pod's fixed names, paths and ports.

The container, volume and directory names and the ports the operator reserves in every
runtime pod. deployment.py renders with them; runtime_validation.py rejects runtimes whose
own containers, ports or volumes would clash with them.
"""

from __future__ import annotations

from mmesh.operator.service import GRPC_PORT_NAME, HTTP_PORT_NAME, PROMETHEUS_PORT_NAME

MM_CONTAINER = "mm"
PULLER_CONTAINER = "puller"
ADAPTER_SUFFIX = "-adapter"

MODELS_DIR = "/models"
MODELS_VOLUME = "models-dir"
STORAGE_CONFIG_DIR = "/storage-config"
STORAGE_CONFIG_VOLUME = "storage-config"
PVC_MOUNTS_DIR = "/pvc_mounts"
ETCD_DIR = "/opt/kserve/mmesh/etcd"
ETCD_VOLUME = "etcd-config"
ETCD_CONNECTION_KEY = "etcd_connection"
TLS_DIR = "/opt/kserve/mmesh/tls"
TLS_VOLUME = "tls-certs"
DOMAIN_SOCKET_VOLUME = "domain-socket"
RESERVED_VOLUMES = frozenset(
    {MODELS_VOLUME, STORAGE_CONFIG_VOLUME, ETCD_VOLUME, TLS_VOLUME, DOMAIN_SOCKET_VOLUME}
)

ADAPTER_PORT = 8085
"""ModelRuntime API of the built-in adapter (the router's INTERNAL_GRPC_PORT)."""
PULLER_PORT = 8086
INTERNAL_PORT = 8080
"""Pod-to-pod port of the routers (peers forward requests here)."""
PROBE_PORT = 8089
PRESTOP_PORT = 8090
DEFAULT_RUNTIME_PORT = 8001
RESERVED_PORTS = frozenset({INTERNAL_PORT, PROBE_PORT, PRESTOP_PORT, *range(11881, 11900)})
RESERVED_PORT_NAMES = frozenset({GRPC_PORT_NAME, HTTP_PORT_NAME, PROMETHEUS_PORT_NAME})

TERMINATION_GRACE_PERIOD_S = 90
MAX_SURGE = "75%"
MAX_UNAVAILABLE = "15%"
KV_STORE_PREFIX = "mm"
DEFAULT_VMODEL_OWNER = "ksp"
