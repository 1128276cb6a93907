"""The modelmesh-serving Service and the URLs the status reports."""

from __future__ import annotations

import pytest

from mmesh.operator.resources import OwnerReference
from mmesh.operator.service import endpoints, needs_recreate, render_service
from mmesh.operator.serving_config import ServingConfig, merge_config
from tests.unit.operator.conftest import DEFAULTS_YAML, NAMESPACE, check_golden


def with_config(user: str) -> ServingConfig:
    return merge_config(DEFAULTS_YAML, user)


def test_service_golden(config: ServingConfig) -> None:
    owner = OwnerReference("apps/v1", "Deployment", "modelmesh-controller", "uid-controller")
    check_golden(
        "service_modelmesh-serving.yaml", render_service(config, namespace=NAMESPACE, owner=owner)
    )


def test_default_service_is_headless_and_spans_every_runtime(config: ServingConfig) -> None:
    service = render_service(config, namespace=NAMESPACE)
    assert service["metadata"]["name"] == "modelmesh-serving"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"modelmesh-service": "modelmesh-serving"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc", 8033, "grpc"),
        ("http", 8008, "http"),
        ("prometheus", 2112, "prometheus"),
    ]
    assert "ownerReferences" not in service["metadata"]


def test_ports_follow_the_config() -> None:
    config = with_config(
        "headlessService: false\ninferenceServicePort: 9033\nrestProxy: {enabled: false}\n"
        "metrics: {enabled: false}\ninferenceServiceName: mesh"
    )
    service = render_service(config, namespace=NAMESPACE)
    assert "clusterIP" not in service["spec"]
    assert service["spec"]["selector"] == {"modelmesh-service": "mesh"}
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("grpc", 9033)]


def test_switching_headlessness_needs_a_new_service(config: ServingConfig) -> None:
    headless = render_service(config, namespace=NAMESPACE)
    normal = render_service(with_config("headlessService: false"), namespace=NAMESPACE)
    assert needs_recreate(headless, normal)
    assert needs_recreate(normal, headless)
    assert not needs_recreate(headless, headless)


@pytest.mark.parametrize(
    ("user", "grpc", "rest"),
    [
        ("", "grpc://modelmesh-serving.ns:8033", "http://modelmesh-serving.ns:8008"),
        (
            "tls: {secretName: t}",
            "grpc://modelmesh-serving.ns:8033",
            "https://modelmesh-serving.ns:8008",
        ),
        ("restProxy: {enabled: false}", "grpc://modelmesh-serving.ns:8033", None),
    ],
)
def test_endpoints(user: str, grpc: str, rest: str | None) -> None:
    found = endpoints(with_config(user), "ns")
    assert (found.grpc_url, found.rest_url) == (grpc, rest)
