"""Builders for InferenceService / runtime bodies and a default ServingConfig."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmesh.operator.serving_config import ServingConfig, merge_config

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS_YAML = (ROOT / "mmesh" / "operator" / "config_defaults.yaml").read_text()
RUNTIMES_DIR = ROOT / "config" / "runtimes"
NAMESPACE = "modelmesh-serving"
MODELMESH = {"serving.kserve.io/deploymentMode": "ModelMesh"}


def tutorial_isvc() -> dict[str, Any]:
    """The seed tutorial's first InferenceService (storage spec with key and path)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "example-sklearn-isvc",
            "namespace": NAMESPACE,
            "annotations": dict(MODELMESH),
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storage": {"key": "localMinIO", "path": "sklearn/mnist-svm.joblib"},
                }
            }
        },
    }


def tutorial_isvc_uri() -> dict[str, Any]:
    """The tutorial's storageUri variant, with the secretKey annotation."""
    body = tutorial_isvc()
    body["metadata"]["annotations"]["serving.kserve.io/secretKey"] = "localMinIO"
    body["spec"]["predictor"]["model"] = {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "s3://modelmesh-example-models/sklearn/mnist-svm.joblib",
    }
    return body


def make_isvc(
    model: dict[str, Any] | None = None,
    *,
    name: str = "example-sklearn-isvc",
    annotations: dict[str, str] | None = None,
    **predictor: Any,
) -> dict[str, Any]:
    body = tutorial_isvc()
    body["metadata"]["name"] = name
    body["metadata"]["annotations"].update(annotations or {})
    pred: dict[str, Any] = {} if model is None else {"model": model}
    pred.update(predictor)
    body["spec"]["predictor"] = pred
    return body


def runtime_body(name: str = "mlserver-1.x") -> dict[str, Any]:
    """A shipped runtime manifest from config/runtimes, with a uid as the API gives it."""
    body: dict[str, Any] = yaml.safe_load((RUNTIMES_DIR / f"{name}.yaml").read_text())
    body["metadata"]["uid"] = f"uid-{name}"
    return body


def make_runtime_body(
    name: str = "rt",
    *,
    formats: list[dict[str, Any]] | None = None,
    protocols: list[str] | None = None,
    kind: str = "ServingRuntime",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "supportedModelFormats": copy.deepcopy(formats or []),
            "protocolVersions": list(protocols or []),
            "multiModel": True,
            "containers": [{"name": "server", "image": "example/server:1.0"}],
        },
    }
    if kind == "ServingRuntime":
        body["metadata"]["namespace"] = NAMESPACE
    body["spec"].update(spec)
    return body


@pytest.fixture
def config() -> ServingConfig:
    return merge_config(DEFAULTS_YAML, None)


GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("MMESH_UPDATE_GOLDEN") == "1"


def check_golden(name: str, manifest: dict[str, Any]) -> None:
    """Compare a rendered manifest with golden/<name> as YAML text; MMESH_UPDATE_GOLDEN=1
    rewrites the file instead."""
    text = yaml.safe_dump(manifest, sort_keys=False, width=10_000)
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run with MMESH_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from the golden file (MMESH_UPDATE_GOLDEN=1)"
