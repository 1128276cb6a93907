"""Pure: whether the operator can deploy a runtime (the reference's webhook rules).

`check_runtime` raises InvalidRuntime naming the rule a ServingRuntime breaks: disabled,
no containers, clashing or reserved container names, reserved ports, volumes or port names,
an unknown built-in server type, endpoints in two directories. Callers: deployment.py
before rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from mmesh.operator.errors import InvalidRuntime
from mmesh.operator.podlayout import (
    ADAPTER_SUFFIX,
    MM_CONTAINER,
    PULLER_CONTAINER,
    RESERVED_PORT_NAMES,
    RESERVED_PORTS,
    RESERVED_VOLUMES,
)
from mmesh.operator.resources import ServingRuntime
from mmesh.operator.runtime_selection import is_enabled
from mmesh.operator.serving_config import ServingConfig


def check_runtime(runtime: ServingRuntime, config: ServingConfig) -> None:
    """Reject runtimes the operator cannot deploy (the reference's webhook rules)."""
    if not is_enabled(runtime):
        raise InvalidRuntime(runtime.name, "is disabled or not multiModel; nothing to deploy")
    if not runtime.containers:
        raise InvalidRuntime(runtime.name, "spec.containers must not be empty")
    names = [str(c["name"]) for c in runtime.containers]
    adapter = runtime.built_in_adapter
    if len(set(names)) != len(names) or (
        adapter is not None and adapter.server_type + ADAPTER_SUFFIX in names
    ):
        raise InvalidRuntime(runtime.name, f"container names {names} clash")
    for container in runtime.containers:
        _check_container(runtime, container)
    _check_adapter(runtime, config)
    _check_endpoints(runtime)
    clash = RESERVED_VOLUMES & {str(v.get("name")) for v in runtime.volumes}
    if clash:
        raise InvalidRuntime(runtime.name, f"volume names {sorted(clash)} are reserved")


def _check_container(runtime: ServingRuntime, container: Mapping[str, Any]) -> None:
    name = str(container["name"])
    if name in (MM_CONTAINER, PULLER_CONTAINER, "rest-proxy") or name.startswith("mm-"):
        raise InvalidRuntime(runtime.name, f"container name {name!r} is reserved")
    for port in container.get("ports") or []:
        number, port_name = port.get("containerPort"), port.get("name")
        if number in RESERVED_PORTS:
            raise InvalidRuntime(runtime.name, f"container {name}: port {number} is reserved")
        if port_name in RESERVED_PORT_NAMES:
            raise InvalidRuntime(
                runtime.name, f"container {name}: port name {port_name!r} is reserved"
            )


def _check_adapter(runtime: ServingRuntime, config: ServingConfig) -> None:
    adapter = runtime.built_in_adapter
    if adapter is None:
        return
    if adapter.server_type not in config.built_in_server_types:
        known = ", ".join(config.built_in_server_types)
        raise InvalidRuntime(
            runtime.name, f"builtInAdapter.serverType {adapter.server_type!r} is not one of {known}"
        )
    if adapter.server_type not in {str(c["name"]) for c in runtime.containers}:
        raise InvalidRuntime(
            runtime.name,
            f"builtInAdapter.serverType {adapter.server_type!r} needs a container of that name",
        )
    if runtime.grpc_endpoint is not None and runtime.grpc_endpoint.port is None:
        raise InvalidRuntime(runtime.name, "a builtInAdapter needs grpcEndpoint 'port:<N>'")


def _check_endpoints(runtime: ServingRuntime) -> None:
    sockets = [
        PurePosixPath(e.socket_path).parent
        for e in (runtime.grpc_endpoint, runtime.grpc_data_endpoint)
        if e is not None and e.socket_path is not None
    ]
    if len(set(sockets)) > 1:
        raise InvalidRuntime(
            runtime.name, "unix grpcEndpoint and grpcDataEndpoint must share a directory"
        )
