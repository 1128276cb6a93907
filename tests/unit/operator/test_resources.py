"""Parsing raw bodies into frozen views: typed fields, type errors as InvalidSpec/InvalidRuntime."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mmesh.operator.errors import FailureReason, InvalidRuntime, InvalidSpec
from mmesh.operator.resources import (
    Endpoint,
    InferenceService,
    OwnerReference,
    RuntimeKind,
    ServingRuntime,
)
from tests.unit.operator.conftest import make_runtime_body, runtime_body, tutorial_isvc


def test_tutorial_isvc_view() -> None:
    isvc = InferenceService.from_body(tutorial_isvc())
    assert isvc.name == "example-sklearn-isvc"
    assert isvc.namespace == "modelmesh-serving"
    assert isvc.is_modelmesh
    assert isvc.model is not None
    assert isvc.model.format_name == "sklearn"
    assert isvc.model.storage is not None
    assert isvc.model.storage.key == "localMinIO"
    assert isvc.frameworks == ()


def test_isvc_without_modelmesh_annotation_is_not_ours() -> None:
    body = tutorial_isvc()
    body["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    assert not InferenceService.from_body(body).is_modelmesh
    del body["metadata"]["annotations"]
    assert not InferenceService.from_body(body).is_modelmesh


def test_views_are_frozen_and_do_not_alias_the_body() -> None:
    body = runtime_body("mlserver-1.x")
    rt = ServingRuntime.from_body(body)
    body["spec"]["containers"][0]["name"] = "changed"
    assert rt.containers[0]["name"] == "mlserver"
    with pytest.raises(ValidationError, match="frozen"):
        rt.disabled = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"metadata": {"name": "x"}, "spec": {"predictor": []}}, "spec.predictor"),
        ({"metadata": {"name": "x"}, "spec": {"predictor": {"model": "m"}}}, "model"),
        ({"metadata": {}, "spec": {}}, "metadata.name"),
        ({"metadata": {"name": "x", "annotations": {"a": 1}}, "spec": {}}, "annotations.a"),
    ],
)
def test_isvc_type_errors(body: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        InferenceService.from_body(body)
    assert caught.value.reason is FailureReason.INVALID_PREDICTOR_SPEC
    assert where in caught.value.message


def test_runtime_view_of_mlserver() -> None:
    rt = ServingRuntime.from_body(runtime_body("mlserver-1.x"))
    assert rt.kind is RuntimeKind.CLUSTER_SERVING_RUNTIME
    assert rt.is_cluster_scoped
    assert rt.multi_model and not rt.disabled
    assert rt.grpc_endpoint == Endpoint(port=8085)
    assert rt.grpc_data_endpoint == Endpoint(port=8001)
    assert [f.name for f in rt.supported_formats] == ["sklearn", "xgboost", "lightgbm"]
    assert rt.built_in_adapter is not None
    assert rt.built_in_adapter.server_type == "mlserver"
    assert rt.built_in_adapter.mem_buffer_bytes == 134217728
    assert OwnerReference.of_runtime(rt).to_manifest() == {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "name": "mlserver-1.x",
        "uid": "uid-mlserver-1.x",
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("port:8085", Endpoint(port=8085)),
        ("unix:/tmp/mm/s.sock", Endpoint(socket_path="/tmp/mm/s.sock")),
    ],
)
def test_endpoints(raw: str, expected: Endpoint) -> None:
    assert ServingRuntime.from_body(make_runtime_body(grpcEndpoint=raw)).grpc_endpoint == expected


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"grpcEndpoint": "8085"}, "spec.grpcEndpoint"),
        ({"grpcEndpoint": "port:0"}, "spec.grpcEndpoint"),
        ({"grpcEndpoint": "unix:relative"}, "spec.grpcEndpoint"),
        ({"multiModel": "yes"}, "spec.multiModel"),
        ({"replicas": -1}, "spec.replicas"),
        ({"replicas": True}, "spec.replicas"),
        ({"containers": [{"image": "x"}]}, "spec.containers[0].name"),
        ({"supportedModelFormats": [{"version": "1"}]}, "supportedModelFormats[0].name"),
        ({"protocolVersions": "grpc-v2"}, "spec.protocolVersions"),
        ({"builtInAdapter": {"memBufferBytes": 1}}, "builtInAdapter.serverType"),
    ],
)
def test_runtime_type_errors(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidRuntime) as caught:
        ServingRuntime.from_body(make_runtime_body("bad", **spec))
    assert caught.value.runtime == "bad"
    assert where in caught.value.message


def test_runtime_kind_from_body_or_argument() -> None:
    body = make_runtime_body(kind="ClusterServingRuntime")
    assert ServingRuntime.from_body(body).is_cluster_scoped
    assert not ServingRuntime.from_body(body, RuntimeKind.SERVING_RUNTIME).is_cluster_scoped
    with pytest.raises(InvalidRuntime, match="kind"):
        ServingRuntime.from_body({**body, "kind": "Pod"})
