"""InferenceService -> Registration: the tutorial's two forms, URI schemes, and every bad CR."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmesh.adapter.storage.spec import parse_model_key
from mmesh.operator.errors import FailureReason, InvalidSpec
from mmesh.operator.resources import InferenceService
from mmesh.operator.translation import parse_storage_uri, to_registration
from tests.unit.operator.conftest import make_isvc, tutorial_isvc, tutorial_isvc_uri


def translate(body: dict[str, Any]):
    return to_registration(InferenceService.from_body(body))


def test_tutorial_storage_spec() -> None:
    reg = translate(tutorial_isvc())
    assert reg.vmodel_id == "example-sklearn-isvc"
    assert reg.model_id.startswith("example-sklearn-isvc__isvc-")
    assert len(reg.model_id.rsplit("-", 1)[1]) == 10
    assert reg.namespace == "modelmesh-serving"
    assert reg.owner == "isvc"
    assert reg.model_info.type == "mt:sklearn"
    assert reg.model_info.path == "sklearn/mnist-svm.joblib"
    assert json.loads(reg.model_info.key) == {
        "storage_key": "localMinIO",
        "model_type": {"name": "sklearn"},
    }


def test_tutorial_storage_uri_with_secret_key_annotation() -> None:
    reg = translate(tutorial_isvc_uri())
    assert reg.model_info.type == "mt:sklearn"
    assert reg.model_info.path == "sklearn/mnist-svm.joblib"
    assert json.loads(reg.model_info.key) == {
        "storage_key": "localMinIO",
        "storage_params": {"bucket": "modelmesh-example-models", "type": "s3"},
        "model_type": {"name": "sklearn"},
    }


@pytest.mark.parametrize("body", [tutorial_isvc(), tutorial_isvc_uri()], ids=["storage", "uri"])
def test_model_key_is_what_the_adapter_parses(body) -> None:
    reg = translate(body)
    key = parse_model_key(reg.model_info.key)
    assert key.storage_key == "localMinIO"
    assert dict(key.model_type or {}) == {"name": "sklearn"}


@pytest.mark.parametrize(
    ("uri", "path", "params"),
    [
        ("s3://bucket/a/b.joblib", "a/b.joblib", {"type": "s3", "bucket": "bucket"}),
        ("gs://bkt/m/", "m/", {"type": "gcs", "bucket": "bkt"}),
        ("pvc://claim/models/m.onnx", "models/m.onnx", {"type": "pvc", "name": "claim"}),
        ("s3://bucket", "", {"type": "s3", "bucket": "bucket"}),
        ("s3://bucket/with%20space", "with space", {"type": "s3", "bucket": "bucket"}),
        (
            "https://example.com/models/m.bst?sig=1",
            "",
            {"type": "http", "url": "https://example.com/models/m.bst?sig=1"},
        ),
        ("http://host:8080/m", "", {"type": "http", "url": "http://host:8080/m"}),
        (
            "https://acct.blob.core.windows.net/ctr/dir/model.pt",
            "dir/model.pt",
            {"type": "azure", "account_name": "acct", "container": "ctr"},
        ),
    ],
)
def test_storage_uri_schemes(uri: str, path: str, params: dict[str, str]) -> None:
    assert parse_storage_uri(uri) == (path, params)


def test_uri_parameters_override_storage_parameters() -> None:
    model = {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "s3://from-uri/m",
        "storage": {"key": "k", "parameters": {"bucket": "from-spec", "region": "eu"}},
    }
    reg = translate(make_isvc(model))
    assert dict(reg.storage.parameters) == {"bucket": "from-uri", "region": "eu", "type": "s3"}
    assert reg.storage.key == "k"


def test_storage_key_wins_over_secret_key_annotation() -> None:
    model = {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "s3://b/m",
        "storage": {"key": "from-spec"},
    }
    body = make_isvc(model, annotations={"serving.kserve.io/secretKey": "from-annotation"})
    assert translate(body).storage.key == "from-spec"


def test_schema_path_from_storage_then_annotation() -> None:
    annotations = {"serving.kserve.io/schemaPath": "annotated/schema.json"}
    storage = {"path": "m", "schemaPath": "spec/schema.json"}
    spec_first = make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": storage}, annotations=annotations
    )
    assert translate(spec_first).storage.schema_path == "spec/schema.json"
    fallback = make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}}, annotations=annotations
    )
    reg = translate(fallback)
    assert reg.storage.schema_path == "annotated/schema.json"
    assert json.loads(reg.model_info.key)["schema_path"] == "annotated/schema.json"


@pytest.mark.parametrize(
    ("model", "expected_type"),
    [
        ({"modelFormat": {"name": "sklearn", "version": "0"}}, "mt:sklearn:0"),
        ({"modelFormat": {"name": "onnx"}, "protocolVersion": "grpc-v2"}, "mt:onnx|pv:grpc-v2"),
        (
            {"modelFormat": {"name": "onnx", "version": "1"}, "protocolVersion": "v2"},
            "mt:onnx:1|pv:v2",
        ),
        ({"modelFormat": {"name": "sklearn"}, "protocolVersion": "unknown"}, "mt:sklearn"),
        ({"modelFormat": {"name": "sklearn"}, "runtime": "mlserver-1.x"}, "rt:mlserver-1.x"),
    ],
)
def test_model_type_label(model: dict[str, Any], expected_type: str) -> None:
    model = {**model, "storage": {"path": "m"}}
    reg = translate(make_isvc(model))
    assert reg.model_info.type == expected_type


def test_model_key_carries_format_version() -> None:
    model = {"modelFormat": {"name": "sklearn", "version": "0"}, "storage": {"path": "m"}}
    key = json.loads(translate(make_isvc(model)).model_info.key)
    assert key == {"model_type": {"name": "sklearn", "version": "0"}}


def test_framework_spec_takes_runtime_from_annotation() -> None:
    body = make_isvc(
        annotations={"serving.kserve.io/servingRuntime": "mlserver-1.x"},
        sklearn={"storageUri": "s3://b/m.joblib"},
    )
    reg = translate(body)
    assert reg.requirement.format.name == "sklearn"
    assert reg.model_info.type == "rt:mlserver-1.x"


def test_framework_spec_without_annotation_selects_by_format() -> None:
    reg = translate(make_isvc(xgboost={"storageUri": "s3://b/m.bst", "protocolVersion": "grpc-v2"}))
    assert reg.model_info.type == "mt:xgboost|pv:grpc-v2"


# ---------------------------------------------------------------- the model id


def test_same_spec_same_id_and_key_order_does_not_matter() -> None:
    a = make_isvc({"modelFormat": {"name": "sklearn"}, "storage": {"path": "m", "key": "k"}})
    b = make_isvc({"storage": {"key": "k", "path": "m"}, "modelFormat": {"name": "sklearn"}})
    assert translate(a).model_id == translate(b).model_id


@pytest.mark.parametrize(
    "change",
    [
        {"storage": {"path": "other", "key": "k"}},
        {"storage": {"path": "m", "key": "other"}},
        {"modelFormat": {"name": "sklearn", "version": "1"}},
        {"runtime": "mlserver-1.x"},
        {"protocolVersion": "grpc-v2"},
    ],
)
def test_spec_change_makes_a_new_concrete_model(change: dict[str, Any]) -> None:
    base = {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m", "key": "k"}}
    before = translate(make_isvc(base)).model_id
    after = translate(make_isvc({**base, **change})).model_id
    assert before != after
    assert after.startswith("example-sklearn-isvc__isvc-")


def test_fields_modelmesh_ignores_do_not_change_the_id() -> None:
    base = {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}}
    extra = {**base, "resources": {"limits": {"cpu": "2"}}}
    assert (
        translate(make_isvc(base)).model_id == translate(make_isvc(extra, minReplicas=3)).model_id
    )


def test_annotation_key_change_makes_a_new_concrete_model() -> None:
    body = tutorial_isvc_uri()
    before = translate(body).model_id
    body["metadata"]["annotations"]["serving.kserve.io/secretKey"] = "other"
    assert translate(body).model_id != before


# ---------------------------------------------------------------- bad CRs


BAD_CRS = {
    "no modelFormat": make_isvc({"storage": {"path": "m"}}),
    "empty modelFormat name": make_isvc({"modelFormat": {"name": ""}, "storage": {"path": "m"}}),
    "storage.path and storageUri": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m", "storage": {"path": "m"}}
    ),
    "neither storage.path nor storageUri": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"key": "k"}}
    ),
    "unknown URI scheme": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storageUri": "ftp://h/m"}
    ),
    "URI without scheme": make_isvc({"modelFormat": {"name": "sklearn"}, "storageUri": "/data/m"}),
    "s3 URI without bucket": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storageUri": "s3:///m"}
    ),
    "azure URI without container": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storageUri": "https://a.blob.core.windows.net/"}
    ),
    "model spec and framework spec": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}},
        sklearn={"storageUri": "s3://b/m"},
    ),
    "model spec and runtime annotation": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}},
        annotations={"serving.kserve.io/servingRuntime": "mlserver-1.x"},
    ),
    "no predictor at all": make_isvc(),
    "two framework specs": make_isvc(
        sklearn={"storageUri": "s3://b/m"}, xgboost={"storageUri": "s3://b/m"}
    ),
    "name too long for a label": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}}, name="n" * 64
    ),
    "name not a label value": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m"}}, name="-bad-"
    ),
    "modelFormat not an object": make_isvc({"modelFormat": "sklearn", "storage": {"path": "m"}}),
    "storage path not a string": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": 3}}
    ),
    "parameters not strings": make_isvc(
        {"modelFormat": {"name": "sklearn"}, "storage": {"path": "m", "parameters": {"a": 1}}}
    ),
}


@pytest.mark.parametrize("body", BAD_CRS.values(), ids=BAD_CRS.keys())
def test_bad_cr_is_invalid_spec(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        translate(body)
    assert caught.value.reason is FailureReason.INVALID_PREDICTOR_SPEC
    assert caught.value.message


def test_messages_name_the_problem() -> None:
    with pytest.raises(InvalidSpec, match=r"modelFormat\.name is required"):
        translate(BAD_CRS["no modelFormat"])
    with pytest.raises(InvalidSpec, match=r"both the storageUri and the storage\.path"):
        translate(BAD_CRS["storage.path and storageUri"])
    with pytest.raises(InvalidSpec, match="unsupported storageUri scheme 'ftp'"):
        translate(BAD_CRS["unknown URI scheme"])
    with pytest.raises(InvalidSpec, match="64 characters"):
        translate(BAD_CRS["name too long for a label"])


# ---------------------------------------------------------------- minimum copies

MIN_COPIES = "serving.kserve.io/minimumCopies"


@pytest.mark.parametrize(("value", "expected"), [(None, 0), ("0", 0), ("2", 2), (" 3 ", 3)])
def test_minimum_copies_come_from_the_annotation(value: str | None, expected: int) -> None:
    body = tutorial_isvc()
    if value is not None:
        body["metadata"]["annotations"][MIN_COPIES] = value
    assert translate(body).min_copies == expected


def test_minimum_copies_do_not_change_the_concrete_model() -> None:
    body = tutorial_isvc()
    before = translate(body)
    body["metadata"]["annotations"][MIN_COPIES] = "2"
    after = translate(body)
    assert (after.model_id, after.model_info) == (before.model_id, before.model_info)


@pytest.mark.parametrize("value", ["two", "-1", "1.5", "", "1001", "²"])
def test_bad_minimum_copies_are_an_invalid_spec_naming_the_annotation(value: str) -> None:
    body = tutorial_isvc()
    body["metadata"]["annotations"][MIN_COPIES] = value
    with pytest.raises(InvalidSpec) as err:
        translate(body)
    assert err.value.reason is FailureReason.INVALID_PREDICTOR_SPEC
    assert f"{MIN_COPIES} must be a whole number of copies from 0 to 1000" in err.value.message
    assert repr(value) in err.value.message
