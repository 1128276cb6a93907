"""Runtime label sets, model requirements and which runtimes support a model."""

from __future__ import annotations

from typing import Any

import pytest

from mmesh.operator.errors import FailureReason, NoSupportingRuntime, RuntimeNotRecognized
from mmesh.operator.resources import InferenceService, ServingRuntime
from mmesh.operator.runtime_selection import (
    ModelFormat,
    Requirement,
    effective_runtimes,
    mm_labels_value,
    runtime_has_models,
    runtime_labels,
    supporting_runtimes,
    unsupported,
)
from mmesh.operator.translation import to_registration
from tests.unit.operator.conftest import make_runtime_body, runtime_body, tutorial_isvc


def runtime(name: str = "rt", **kwargs: Any) -> ServingRuntime:
    return ServingRuntime.from_body(make_runtime_body(name, **kwargs))


SKLEARN_AUTO = [{"name": "sklearn", "version": "0", "autoSelect": True}]


def test_mlserver_labels_with_rest() -> None:
    mlserver = ServingRuntime.from_body(runtime_body("mlserver-1.x"))
    labels = runtime_labels(mlserver, rest_enabled=True)
    assert mm_labels_value(labels) == (
        "mt:lightgbm,mt:lightgbm:3,mt:sklearn,mt:sklearn:0,mt:xgboost,mt:xgboost:1,"
        "pv:grpc-v2,pv:v2,rt:mlserver-1.x"
    )


def test_grpc_v2_adds_v2_only_when_rest_is_on() -> None:
    rt = runtime(formats=SKLEARN_AUTO, protocols=["grpc-v2"])
    assert "pv:v2" in runtime_labels(rt, rest_enabled=True)
    assert "pv:v2" not in runtime_labels(rt, rest_enabled=False)


def test_only_auto_select_formats_become_labels() -> None:
    formats = [{"name": "sklearn", "version": "0"}, {"name": "onnx", "autoSelect": True}]
    labels = runtime_labels(runtime(formats=formats), rest_enabled=True)
    assert labels == {"mt:onnx", "rt:rt"}


def test_triton_does_not_auto_select_sklearn() -> None:
    triton = ServingRuntime.from_body(runtime_body("triton-2.x"))
    labels = runtime_labels(triton, rest_enabled=True)
    assert "mt:sklearn" not in labels
    assert {"mt:tensorflow:1", "mt:tensorflow:2", "mt:onnx", "rt:triton-2.x"} <= labels


@pytest.mark.parametrize(
    ("requirement", "labels"),
    [
        (Requirement(ModelFormat("sklearn")), {"mt:sklearn"}),
        (Requirement(ModelFormat("sklearn", "0")), {"mt:sklearn:0"}),
        (Requirement(ModelFormat("sklearn"), protocol="grpc-v2"), {"mt:sklearn", "pv:grpc-v2"}),
        (Requirement(ModelFormat("sklearn"), runtime="x", protocol="v2"), {"rt:x"}),
    ],
)
def test_requirement_labels(requirement: Requirement, labels: set[str]) -> None:
    assert requirement.labels == labels


# The factor matrix: autoSelect x version x protocol x explicit runtime.
AUTO = pytest.mark.parametrize("auto_select", [True, False], ids=["auto", "manual"])
VERSION = pytest.mark.parametrize("version", [None, "0", "1"], ids=["anyver", "v0", "v1"])
PROTOCOL = pytest.mark.parametrize("protocol", [None, "grpc-v2", "v2", "grpc-v1"])
NAMED = pytest.mark.parametrize("named", [None, "rt", "other"], ids=["unnamed", "named", "wrong"])


@AUTO
@VERSION
@PROTOCOL
@NAMED
def test_support_matrix(auto_select, version, protocol, named) -> None:
    rt = runtime(
        formats=[{"name": "sklearn", "version": "0", "autoSelect": auto_select}],
        protocols=["grpc-v2"],
    )
    requirement = Requirement(ModelFormat("sklearn", version), runtime=named, protocol=protocol)
    if named is not None:
        expected = named == "rt"  # an explicit runtime is matched by name only
    else:
        expected = auto_select and version in (None, "0") and protocol in (None, "grpc-v2", "v2")
    if expected:
        assert supporting_runtimes(requirement, [rt]) == (rt,)
    else:
        error = RuntimeNotRecognized if named else NoSupportingRuntime
        with pytest.raises(error):
            supporting_runtimes(requirement, [rt])


def test_tutorial_lands_on_mlserver_only() -> None:
    runtimes = [
        ServingRuntime.from_body(runtime_body(name))
        for name in ("mlserver-1.x", "triton-2.x", "ovms-1.x", "torchserve-0.x")
    ]
    registration = to_registration(InferenceService.from_body(tutorial_isvc()))
    assert [r.name for r in supporting_runtimes(registration.requirement, runtimes)] == [
        "mlserver-1.x"
    ]


def test_several_runtimes_share_a_format() -> None:
    a = runtime("a", formats=SKLEARN_AUTO)
    b = runtime("b", formats=SKLEARN_AUTO)
    found = supporting_runtimes(Requirement(ModelFormat("sklearn")), [b, a])
    assert [r.name for r in found] == ["a", "b"]


@pytest.mark.parametrize("spec", [{"disabled": True}, {"multiModel": False}])
def test_disabled_or_single_model_runtime_supports_nothing(spec: dict[str, Any]) -> None:
    rt = runtime(formats=SKLEARN_AUTO, **spec)
    with pytest.raises(NoSupportingRuntime):
        supporting_runtimes(Requirement(ModelFormat("sklearn")), [rt])
    with pytest.raises(RuntimeNotRecognized):
        supporting_runtimes(Requirement(ModelFormat("sklearn"), runtime="rt"), [rt])


def test_unknown_runtime_is_not_recognized() -> None:
    with pytest.raises(RuntimeNotRecognized) as caught:
        supporting_runtimes(Requirement(ModelFormat("sklearn"), runtime="nope"), [runtime()])
    assert caught.value.reason is FailureReason.RUNTIME_NOT_RECOGNIZED


def test_no_runtime_for_the_format() -> None:
    with pytest.raises(NoSupportingRuntime) as caught:
        supporting_runtimes(Requirement(ModelFormat("pmml")), [runtime(formats=SKLEARN_AUTO)])
    assert caught.value.reason is FailureReason.NO_SUPPORTING_RUNTIME
    assert "mt:pmml" in caught.value.message


def test_no_runtimes_at_all() -> None:
    with pytest.raises(NoSupportingRuntime):
        supporting_runtimes(Requirement(ModelFormat("sklearn")), [])


def test_namespaced_runtime_hides_cluster_runtime_of_the_same_name() -> None:
    cluster = runtime("x", formats=SKLEARN_AUTO, kind="ClusterServingRuntime")
    namespaced = runtime("x", formats=[{"name": "onnx", "autoSelect": True}])
    for order in ([cluster, namespaced], [namespaced, cluster]):
        assert effective_runtimes(order) == (namespaced,)
    with pytest.raises(NoSupportingRuntime):
        supporting_runtimes(Requirement(ModelFormat("sklearn")), [cluster, namespaced])


def test_runtime_has_models_for_scale_to_zero() -> None:
    rt = runtime(formats=SKLEARN_AUTO, protocols=["grpc-v2"])
    sklearn, onnx = Requirement(ModelFormat("sklearn")), Requirement(ModelFormat("onnx"))
    assert runtime_has_models(rt, [onnx, sklearn], rest_enabled=True)
    assert not runtime_has_models(rt, [onnx], rest_enabled=True)
    assert not runtime_has_models(rt, [], rest_enabled=True)


@pytest.mark.parametrize(
    ("requirement", "runtimes", "problem"),
    [
        pytest.param(Requirement(ModelFormat("sklearn")), ["sk"], None, id="supported"),
        pytest.param(
            Requirement(ModelFormat("sklearn"), runtime="sk"), ["sk"], None, id="named, supported"
        ),
        pytest.param(
            Requirement(ModelFormat("pmml")), ["sk"], NoSupportingRuntime, id="no format match"
        ),
        pytest.param(Requirement(ModelFormat("sklearn")), [], NoSupportingRuntime, id="none"),
        pytest.param(
            Requirement(ModelFormat("sklearn"), runtime="nope"),
            ["sk"],
            RuntimeNotRecognized,
            id="named runtime missing",
        ),
    ],
)
def test_unsupported_names_the_reason_supporting_runtimes_raises(
    requirement: Requirement, runtimes: list[str], problem: type[Exception] | None
) -> None:
    rts = [runtime(name, formats=SKLEARN_AUTO) for name in runtimes]
    found = unsupported(requirement, rts)
    if problem is None:
        assert found is None
        assert supporting_runtimes(requirement, rts)
        return
    assert isinstance(found, problem)
    with pytest.raises(problem) as caught:
        supporting_runtimes(requirement, rts)
    assert caught.value.message == found.message
