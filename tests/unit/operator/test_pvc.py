"""Which PVCs a runtime's pods mount: storage-config entries always, claims named by
InferenceServices with allowAnyPVC when they exist and the runtime can serve the model."""

from __future__ import annotations

import json

from mmesh.operator.pvc import (
    model_claim,
    runtime_claims,
    storage_config_claims,
    wanted_claims,
)
from mmesh.operator.resources import InferenceService, ServingRuntime
from mmesh.operator.runtime_selection import ModelFormat, Requirement
from mmesh.operator.translation import to_registration
from tests.unit.operator.conftest import make_isvc, runtime_body

SKLEARN = Requirement(ModelFormat("sklearn"))
ONNX = Requirement(ModelFormat("onnx"))


def mlserver() -> ServingRuntime:
    return ServingRuntime.from_body(runtime_body("mlserver-1.x"))


def test_storage_config_pvc_entries_are_sorted_and_unique() -> None:
    entries = {
        "localMinIO": json.dumps({"type": "s3", "bucket": "b"}),
        "zeta": json.dumps({"type": "pvc", "name": "zeta-claim"}),
        "alpha": json.dumps({"type": "pvc", "name": "alpha-claim"}),
        "again": json.dumps({"type": "pvc", "name": "zeta-claim"}),
    }
    found = storage_config_claims(entries)
    assert found.names == ("alpha-claim", "zeta-claim")
    assert found.problems == ()


def test_unreadable_storage_entries_are_reported_and_skipped() -> None:
    entries = {
        "broken": "{not json",
        "list": "[1, 2]",
        "nameless": json.dumps({"type": "pvc"}),
        "good": json.dumps({"type": "pvc", "name": "models"}),
    }
    found = storage_config_claims(entries)
    assert found.names == ("models",)
    assert found.problems[0].startswith("storage entry 'broken' is not valid JSON")
    assert found.problems[1:] == (
        "storage entry 'list' is not a JSON object",
        "storage entry 'nameless' of type pvc names no claim ('name')",
    )


def test_a_pvc_storage_uri_names_its_claim() -> None:
    model = {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://my-claim/sklearn/m.joblib"}
    registration = to_registration(InferenceService.from_body(make_isvc(model)))
    assert model_claim(registration.storage.parameters) == "my-claim"
    assert registration.model_info.path == "sklearn/m.joblib"
    s3 = {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://bucket/m.joblib"}
    registration = to_registration(InferenceService.from_body(make_isvc(s3)))
    assert model_claim(registration.storage.parameters) is None


def test_storage_parameters_name_a_claim() -> None:
    assert model_claim({"type": "pvc", "name": "c"}) == "c"
    assert model_claim({"type": "pvc"}) is None
    assert model_claim({"type": "s3", "name": "c"}) is None


def test_storage_config_claims_go_to_every_runtime_even_without_allow_any() -> None:
    mounts = runtime_claims(
        mlserver(),
        storage=("b", "a"),
        models=[(ONNX, "other")],
        existing={"other"},
        allow_any=False,
        rest_enabled=True,
    )
    assert mounts == ("a", "b")


def test_allow_any_pvc_adds_existing_claims_of_models_the_runtime_serves() -> None:
    models = [(SKLEARN, "sk-claim"), (SKLEARN, "missing"), (ONNX, "onnx-claim")]
    mounts = runtime_claims(
        mlserver(),
        storage=("shared",),
        models=models,
        existing={"sk-claim", "onnx-claim"},
        allow_any=True,
        rest_enabled=True,
    )
    # mlserver serves sklearn, not onnx; "missing" does not exist, so it would block the pods
    assert mounts == ("shared", "sk-claim")
    assert wanted_claims(models) == {"sk-claim", "missing", "onnx-claim"}


def test_allow_any_pvc_off_ignores_model_claims() -> None:
    mounts = runtime_claims(
        mlserver(),
        storage=(),
        models=[(SKLEARN, "sk-claim")],
        existing={"sk-claim"},
        allow_any=False,
        rest_enabled=True,
    )
    assert mounts == ()
