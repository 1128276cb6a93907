"""The CRDs in crds/: names and columns, and their schemas accept good objects and reject
malformed ones (validated with jsonschema, since no API server runs here)."""

from __future__ import annotations

import copy
import functools
from dataclasses import replace
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev pins
import pytest
import yaml

from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.records import ModelRecord, VModelRecord
from mmesh.operator.errors import FailureReason, InvalidSpec
from mmesh.operator.service import Endpoints
from mmesh.operator.status import Observation, decode_status
from tests.unit.operator.conftest import (
    ROOT,
    RUNTIMES_DIR,
    make_isvc,
    tutorial_isvc,
    tutorial_isvc_uri,
)

CRDS = ROOT / "crds"


@functools.cache
def crd(plural: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / f"serving.kserve.io_{plural}.yaml").read_text())
    return loaded


def schema(plural: str) -> dict[str, Any]:
    (version,) = crd(plural)["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


@functools.cache
def validator(plural: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(schema(plural))


def errors(plural: str, obj: dict[str, Any]) -> list[str]:
    return sorted(e.message for e in validator(plural).iter_errors(obj))


def valid(plural: str, obj: dict[str, Any]) -> bool:
    return not errors(plural, obj)


# ---------------------------------------------------------------- definitions


@pytest.mark.parametrize(
    ("plural", "kind", "scope", "version"),
    [
        ("inferenceservices", "InferenceService", "Namespaced", "v1beta1"),
        ("servingruntimes", "ServingRuntime", "Namespaced", "v1alpha1"),
        ("clusterservingruntimes", "ClusterServingRuntime", "Cluster", "v1alpha1"),
    ],
)
def test_crd_names(plural: str, kind: str, scope: str, version: str) -> None:
    doc = crd(plural)
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == f"{plural}.serving.kserve.io"
    spec = doc["spec"]
    assert spec["group"] == "serving.kserve.io"
    assert spec["scope"] == scope
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    (served,) = spec["versions"]
    assert (served["name"], served["served"], served["storage"]) == (version, True, True)
    assert served["subresources"] == {"status": {}}
    jsonschema.Draft4Validator.check_schema(served["schema"]["openAPIV3Schema"])


def columns(plural: str) -> list[str]:
    (version,) = crd(plural)["spec"]["versions"]
    return [c["name"].upper() for c in version["additionalPrinterColumns"]]


def test_isvc_short_name_and_columns() -> None:
    assert crd("inferenceservices")["spec"]["names"]["shortNames"] == ["isvc"]
    assert columns("inferenceservices") == [
        "URL",
        "READY",
        "PREV",
        "LATEST",
        "PREVROLLEDOUTREVISION",
        "LATESTREADYREVISION",
        "AGE",
    ]


@pytest.mark.parametrize("plural", ["servingruntimes", "clusterservingruntimes"])
def test_runtime_columns(plural: str) -> None:
    assert columns(plural) == ["DISABLED", "MODELTYPE", "CONTAINERS", "AGE"]


def test_both_runtime_kinds_share_one_schema() -> None:
    assert schema("servingruntimes") == schema("clusterservingruntimes")


def test_status_keeps_fields_it_does_not_declare() -> None:
    # kopf keeps its own progress under status; pruning it would break the operator
    for plural in ("inferenceservices", "servingruntimes", "clusterservingruntimes"):
        assert schema(plural)["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]


# ---------------------------------------------------------------- InferenceService objects


@pytest.mark.parametrize("body", [tutorial_isvc(), tutorial_isvc_uri()], ids=["storage", "uri"])
def test_tutorial_isvc_validates(body: dict[str, Any]) -> None:
    assert errors("inferenceservices", body) == []


def test_kserve_fields_modelmesh_ignores_are_kept() -> None:
    body = tutorial_isvc()
    body["spec"]["predictor"]["minReplicas"] = 1
    body["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "1"}}
    body["spec"]["predictor"]["model"]["someFutureField"] = {"x": 1}
    body["spec"]["transformer"] = {"containers": [{"name": "t", "image": "i"}]}
    assert valid("inferenceservices", body)


def test_framework_spec_validates() -> None:
    body = make_isvc(sklearn={"storageUri": "s3://b/m.joblib", "protocolVersion": "grpc-v2"})
    assert valid("inferenceservices", body)


def _mutated(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(tutorial_isvc())
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return body


_DELETE = object()
MALFORMED = {
    "modelFormat missing": ("spec.predictor.model.modelFormat", _DELETE),
    "modelFormat name missing": ("spec.predictor.model.modelFormat", {"version": "1"}),
    "modelFormat name empty": ("spec.predictor.model.modelFormat", {"name": ""}),
    "modelFormat a string": ("spec.predictor.model.modelFormat", "sklearn"),
    "storage path a number": ("spec.predictor.model.storage", {"path": 3}),
    "storage parameters not strings": ("spec.predictor.model.storage", {"parameters": {"a": 1}}),
    "storageUri a list": ("spec.predictor.model.storageUri", ["s3://b/m"]),
    "runtime a number": ("spec.predictor.model.runtime", 1),
    "predictor missing": ("spec.predictor", _DELETE),
    "predictor a list": ("spec.predictor", []),
    "model a string": ("spec.predictor.model", "sklearn"),
    "minReplicas negative": ("spec.predictor.minReplicas", -1),
    "framework spec a string": ("spec.predictor.sklearn", "s3://b/m"),
}


@pytest.mark.parametrize(("path", "value"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_isvc_is_rejected(path: str, value: Any) -> None:
    assert errors("inferenceservices", _mutated(path, value))


# ---------------------------------------------------------------- status written by the operator

NOW = 1_700_000_000_000
ENDPOINTS = Endpoints("grpc://modelmesh-serving.ns:8033", "http://modelmesh-serving.ns:8008")
M = ModelId("example-sklearn-isvc__isvc-0123456789")


def _statuses() -> list[dict[str, Any]]:
    failed = ModelRecord("mt:sklearn").with_copy_failed(InstanceId("pod-a"), "boom", NOW)
    loaded = ModelRecord("mt:sklearn").with_copy_loaded(InstanceId("pod-b"), NOW)
    invalid = InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, "bad")
    observations = [
        Observation(None),
        Observation(None, problem=invalid),
        Observation(VModelRecord(M, M), {M: failed}, M),
        Observation(VModelRecord(M, M), {M: loaded}, M),
        Observation(
            VModelRecord(M, M), {M: ModelRecord("mt:sklearn")}, M, waiting_for_runtime=True
        ),
        Observation(VModelRecord(M, M), {M: replace(loaded, min_copies=2)}, M),
    ]
    return [decode_status(o, endpoints=ENDPOINTS, now_ms=NOW) for o in observations]


@pytest.mark.parametrize("status", _statuses())
def test_status_the_operator_writes_validates(status: dict[str, Any]) -> None:
    body = {**tutorial_isvc(), "status": status}
    assert errors("inferenceservices", body) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("transitionStatus", "Sideways"),
        ("states", {"activeModelState": "Sleeping"}),
        ("states", {"targetModelState": "Loaded"}),
        ("copies", {"totalCopies": 1}),
        ("copies", {"failedCopies": -1}),
        ("copies", {"failedCopies": 0, "minCopies": -1}),
        ("lastFailureInfo", {"reason": "Oops"}),
    ],
)
def test_bad_status_is_rejected(path: str, value: Any) -> None:
    status = copy.deepcopy(_statuses()[3])
    status["modelStatus"][path] = value
    assert errors("inferenceservices", {**tutorial_isvc(), "status": status})


def test_min_copies_is_declared_so_an_api_server_keeps_it() -> None:
    status = schema("inferenceservices")["properties"]["status"]
    copies = status["properties"]["modelStatus"]["properties"]["copies"]["properties"]
    assert copies["minCopies"] == {"type": "integer", "minimum": 0}
    assert _statuses()[-1]["modelStatus"]["copies"]["minCopies"] == 2


# ---------------------------------------------------------------- runtimes


@pytest.mark.parametrize("path", sorted(RUNTIMES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_runtimes_validate(path) -> None:
    body = yaml.safe_load(path.read_text())
    assert body["kind"] == "ClusterServingRuntime"
    assert errors("clusterservingruntimes", body) == []


def test_shipped_runtime_set() -> None:
    assert sorted(p.stem for p in RUNTIMES_DIR.glob("*.yaml")) == [
        "mlserver-1.x",
        "ovms-1.x",
        "torchserve-0.x",
        "triton-2.x",
    ]


BAD_RUNTIME_SPECS = {
    "no containers": {"containers": []},
    "container without name": {"containers": [{"image": "x"}]},
    "format without name": {"supportedModelFormats": [{"version": "1"}]},
    "autoSelect a string": {"supportedModelFormats": [{"name": "a", "autoSelect": "yes"}]},
    "bad endpoint": {"grpcEndpoint": "8085"},
    "negative replicas": {"replicas": -1},
    "adapter without serverType": {"builtInAdapter": {"memBufferBytes": 1}},
    "multiModel a string": {"multiModel": "true"},
}


@pytest.mark.parametrize("spec", BAD_RUNTIME_SPECS.values(), ids=BAD_RUNTIME_SPECS.keys())
def test_malformed_runtime_is_rejected(spec: dict[str, Any]) -> None:
    body = yaml.safe_load((RUNTIMES_DIR / "mlserver-1.x.yaml").read_text())
    body["spec"] |= spec
    assert errors("servingruntimes", body)
