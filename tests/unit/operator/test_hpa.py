"""The runtime HPA: annotations -> settings (defaults, ignored values reported), the
autoscaling/v2 manifest, and the replicas the operator still writes."""

from __future__ import annotations

from typing import Any

import pytest

from mmesh.operator.hpa import (
    Autoscaling,
    autoscaling_of,
    governed_replicas,
    render_hpa,
)
from mmesh.operator.resources import ServingRuntime
from tests.unit.operator.conftest import NAMESPACE, make_runtime_body, runtime_body

HPA = {"serving.kserve.io/autoscalerClass": "hpa"}


def runtime(annotations: dict[str, str], **spec: Any) -> ServingRuntime:
    body = make_runtime_body("rt", **spec)
    body["metadata"]["annotations"] = annotations
    return ServingRuntime.from_body(body)


def test_no_annotation_means_no_hpa() -> None:
    assert autoscaling_of(runtime({})).autoscaling is None
    none = autoscaling_of(runtime({"serving.kserve.io/autoscalerClass": "none"}))
    assert none.autoscaling is None
    assert none.problems == ()


def test_defaults_are_the_references() -> None:
    decision = autoscaling_of(runtime(HPA))
    assert decision.autoscaling == Autoscaling("cpu", 80, 1, 1)
    assert decision.problems == ()


def test_every_annotation_is_read() -> None:
    annotations = {
        **HPA,
        "serving.kserve.io/metrics": "memory",
        "serving.kserve.io/targetUtilizationPercentage": "65",
        "serving.kserve.io/min-scale": "2",
        "serving.kserve.io/max-scale": "5",
    }
    decision = autoscaling_of(runtime(annotations))
    assert decision.autoscaling == Autoscaling("memory", 65, 2, 5)
    assert decision.problems == ()


def test_max_scale_defaults_to_min_scale() -> None:
    decision = autoscaling_of(runtime({**HPA, "serving.kserve.io/min-scale": "3"}))
    assert decision.autoscaling == Autoscaling("cpu", 80, 3, 3)


@pytest.mark.parametrize(
    ("key", "value", "problem", "expected"),
    [
        (
            "serving.kserve.io/metrics",
            "gpu",
            "annotation serving.kserve.io/metrics='gpu' is not a supported metric "
            "(supported: cpu, memory); using cpu",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/targetUtilizationPercentage",
            "150",
            "annotation serving.kserve.io/targetUtilizationPercentage='150' must be an integer "
            "from 1 to 100; using 80",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/targetUtilizationPercentage",
            "high",
            "annotation serving.kserve.io/targetUtilizationPercentage='high' must be an integer "
            "from 1 to 100; using 80",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/min-scale",
            "0",
            "annotation serving.kserve.io/min-scale='0' must be an integer >= 1; using 1",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/min-scale",
            "--2",
            "annotation serving.kserve.io/min-scale='--2' must be an integer >= 1; using 1",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/max-scale",
            "²",
            "annotation serving.kserve.io/max-scale='²' must be an integer >= 1; using 1",
            Autoscaling("cpu", 80, 1, 1),
        ),
        (
            "serving.kserve.io/max-scale",
            "many",
            "annotation serving.kserve.io/max-scale='many' must be an integer >= 1; using 1",
            Autoscaling("cpu", 80, 1, 1),
        ),
    ],
)
def test_an_invalid_value_is_reported_and_defaulted(
    key: str, value: str, problem: str, expected: Autoscaling
) -> None:
    decision = autoscaling_of(runtime({**HPA, key: value}))
    assert decision.problems == (problem,)
    assert decision.autoscaling == expected


def test_max_below_min_is_raised_to_min() -> None:
    annotations = {**HPA, "serving.kserve.io/min-scale": "4", "serving.kserve.io/max-scale": "2"}
    decision = autoscaling_of(runtime(annotations))
    assert decision.autoscaling == Autoscaling("cpu", 80, 4, 4)
    assert decision.problems == (
        "annotation serving.kserve.io/max-scale=2 is below serving.kserve.io/min-scale=4; using 4",
    )


def test_an_unknown_class_is_reported_and_means_no_hpa() -> None:
    decision = autoscaling_of(runtime({"serving.kserve.io/autoscalerClass": "keda"}))
    assert decision.autoscaling is None
    assert decision.problems == (
        "annotation serving.kserve.io/autoscalerClass='keda' is not a supported autoscaler "
        "class (supported: hpa); the runtime is not autoscaled",
    )


def test_spec_replicas_next_to_the_hpa_is_reported() -> None:
    decision = autoscaling_of(runtime(HPA, replicas=3))
    assert decision.autoscaling == Autoscaling()
    assert decision.problems == (
        "spec.replicas=3 cannot be combined with serving.kserve.io/autoscalerClass=hpa; "
        "the HPA sets the replicas",
    )


def test_the_manifest_targets_the_runtime_deployment() -> None:
    body = runtime_body("mlserver-1.x")
    body["metadata"]["annotations"] = {
        **HPA,
        "serving.kserve.io/min-scale": "2",
        "serving.kserve.io/max-scale": "4",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    rt = ServingRuntime.from_body(body)
    decision = autoscaling_of(rt)
    assert decision.autoscaling is not None
    name = "modelmesh-serving-mlserver-1.x"
    manifest = render_hpa(
        rt, decision.autoscaling, namespace=NAMESPACE, deployment_name=name, labels={"a": "b"}
    )
    assert manifest["apiVersion"] == "autoscaling/v2"
    assert manifest["kind"] == "HorizontalPodAutoscaler"
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, NAMESPACE)
    assert meta["labels"]["a"] == "b"
    assert meta["labels"]["serving.kserve.io/inferenceservice"] == "mlserver-1.x"
    assert meta["annotations"] == {
        "serving.kserve.io/autoscalerClass": "hpa",
        "serving.kserve.io/min-scale": "2",
        "serving.kserve.io/max-scale": "4",
    }
    assert meta["ownerReferences"][0]["kind"] == "ClusterServingRuntime"
    assert meta["ownerReferences"][0]["uid"] == "uid-mlserver-1.x"
    assert manifest["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": 2,
        "maxReplicas": 4,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ],
    }


def test_the_operator_sets_replicas_only_for_a_new_or_idle_deployment() -> None:
    scaling = Autoscaling(min_replicas=2, max_replicas=6)
    assert governed_replicas(None, scaling) == 2
    assert governed_replicas(0, scaling) == 2
    assert governed_replicas(5, scaling) is None
