"""The storage helper (`puller`) as the operator renders it starts, and talks to the right
ports: the Deployment's env read through the adapter's and the router's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mmesh.adapter.runtime_client import grpc_target
from mmesh.adapter.settings import AdapterSettings, ServerType
from mmesh.operator.resources import ServingRuntime
from tests.unit.operator.conftest import runtime_body
from tests.unit.operator.test_deployment import (
    containers,
    custom_runtime,
    env_of,
    render,
    resolved_env,
)


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> AdapterSettings:
    for name, value in env.items():
        assert isinstance(value, str), f"{name} is not a plain value: {value}"
        monkeypatch.setenv(name, value)
    return AdapterSettings()  # type: ignore[call-arg]


def test_rendered_puller_env_is_a_valid_adapter_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = render(custom_runtime(grpcEndpoint="port:9001", grpcDataEndpoint="port:9000"))
    env = env_of(containers(deployment)["puller"])
    assert "CONTAINER_MEM_REQ_BYTES" not in env  # capacity is the runtime's own

    settings = settings_from(env, monkeypatch)

    assert settings.server_type is ServerType.PULLER
    assert settings.port == 8086
    assert grpc_target(settings.model_server_endpoint, "127.0.0.1") == "127.0.0.1:9001"
    assert str(settings.root_model_dir) == "/models"


def test_custom_runtime_without_data_endpoint_serves_inference_on_its_grpc_endpoint() -> None:
    deployment = render(custom_runtime(grpcEndpoint="port:9001"))
    mm = env_of(containers(deployment)["mm"])
    assert mm["INTERNAL_GRPC_PORT"] == "8086"  # the puller
    assert mm["INTERNAL_SERVING_GRPC_PORT"] == "9001"  # not the puller: it serves no inference


def test_built_in_server_still_requires_the_memory_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADAPTER_SERVER_TYPE", "ovms")
    monkeypatch.delenv("CONTAINER_MEM_REQ_BYTES", raising=False)
    with pytest.raises(ValidationError, match="CONTAINER_MEM_REQ_BYTES is required"):
        AdapterSettings()  # type: ignore[call-arg]


def test_puller_without_an_endpoint_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTER_SERVER_TYPE", "puller")
    monkeypatch.delenv("MODEL_SERVER_ENDPOINT", raising=False)
    with pytest.raises(ValidationError, match="MODEL_SERVER_ENDPOINT"):
        AdapterSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [("port:8085", "10.0.0.7:8085"), ("unix:/tmp/mmesh/grpc.sock", "unix:/tmp/mmesh/grpc.sock")],
)
def test_grpc_target(endpoint: str, target: str) -> None:
    assert grpc_target(endpoint, "10.0.0.7") == target


def test_grpc_target_rejects_other_forms() -> None:
    with pytest.raises(ValueError, match="neither 'port:<N>' nor 'unix:/<path>'"):
        grpc_target("localhost:8085", "127.0.0.1")


@pytest.mark.parametrize(
    ("runtime", "server", "port", "data"),
    [("ovms-1.x", "ovms", 8888, "port:8001"), ("torchserve-0.x", "torchserve", 7071, "port:7070")],
)
def test_shipped_ovms_and_torchserve_adapters_get_a_valid_configuration(
    runtime: str, server: str, port: int, data: str
) -> None:
    deployment = render(ServingRuntime.from_body(runtime_body(runtime)))
    env = resolved_env(containers(deployment)[f"{server}-adapter"], deployment)

    settings = AdapterSettings.model_validate(env)

    assert settings.server_type == server
    assert settings.runtime_port == port  # the server's management API
    assert settings.runtime_data_endpoint == data
    assert settings.capacity_bytes == 1024**3 - 128 * 1024**2
    assert settings.ovms_config_file == Path("/models/model_config_list.json")  # ovms-1.x's
