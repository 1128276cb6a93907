"""The namespace plan (scale-to-zero memory, invalid and autoscaled runtimes) and the
deletion diff, as tables over the pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from mmesh.operator import hpa
from mmesh.operator.namespace_plan import (
    ClaimFacts,
    Deletions,
    Found,
    NamespacePlan,
    NamespaceView,
    ScaleMemory,
    deletions,
    plan_namespace,
)
from mmesh.operator.resources import ServingRuntime
from mmesh.operator.runtime_selection import ModelFormat, Requirement
from mmesh.operator.service import MANAGED_LABELS, SERVICE_LABEL
from mmesh.operator.serving_config import ServingConfig, merge_config
from tests.unit.operator.conftest import DEFAULTS_YAML, NAMESPACE, make_runtime_body

SKLEARN = Requirement(ModelFormat("sklearn"))
KEY = (NAMESPACE, "rt")
OTHER_KEY = ("elsewhere", "rt")
GRACE_S = 60.0
BASE = 2
"""podsPerRuntime in the shipped defaults."""


def config(extra: str | None = None) -> ServingConfig:
    return merge_config(DEFAULTS_YAML, extra)


def runtime(name: str = "rt", annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    body = make_runtime_body(
        name, formats=[{"name": "sklearn", "version": "0", "autoSelect": True}], **spec
    )
    body["metadata"]["annotations"] = annotations or {}
    return ServingRuntime.from_body(body)


def plan(
    *runtimes: ServingRuntime,
    models: tuple[Requirement, ...] = (),
    memory: ScaleMemory | None = None,
    now: float = 1000.0,
    cfg: ServingConfig | None = None,
) -> tuple[NamespacePlan, ScaleMemory]:
    view = NamespaceView(NAMESPACE, runtimes, models, (), ClaimFacts())
    return plan_namespace(
        view,
        cfg or config(),
        etcd_secret_name="model-serving-etcd",
        secret=None,
        memory=memory or ScaleMemory(),
        now=now,
    )


def replicas(p: NamespacePlan) -> dict[str, int]:
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in p.deployments}


LOST_AT_900 = ScaleMemory(frozenset(), {KEY: 900.0})


@pytest.mark.parametrize(
    ("memory", "has_models", "now", "want_replicas", "want_recheck", "want_memory"),
    [
        pytest.param(
            ScaleMemory(),
            True,
            1000.0,
            BASE,
            None,
            ScaleMemory(frozenset({KEY}), {}),
            id="models: base replicas, remembered",
        ),
        pytest.param(
            ScaleMemory(),
            False,
            1000.0,
            0,
            None,
            ScaleMemory(),
            id="never seen with models: zero at once",
        ),
        pytest.param(
            ScaleMemory(frozenset({KEY}), {}),
            False,
            1000.0,
            BASE,
            GRACE_S,
            ScaleMemory(frozenset(), {KEY: 1000.0}),
            id="lost its models: the grace period starts now",
        ),
        pytest.param(
            LOST_AT_900, False, 930.0, BASE, 30.0, LOST_AT_900, id="inside the grace period"
        ),
        pytest.param(LOST_AT_900, False, 960.0, 0, None, LOST_AT_900, id="grace period over"),
        pytest.param(
            LOST_AT_900,
            True,
            930.0,
            BASE,
            None,
            ScaleMemory(frozenset({KEY}), {}),
            id="models back: the grace period is forgotten",
        ),
        pytest.param(
            ScaleMemory(frozenset({OTHER_KEY}), {OTHER_KEY: 5.0}),
            True,
            1000.0,
            BASE,
            None,
            ScaleMemory(frozenset({OTHER_KEY, KEY}), {OTHER_KEY: 5.0}),
            id="another namespace's memory is kept",
        ),
    ],
)
def test_scale_to_zero_memory(
    memory: ScaleMemory,
    has_models: bool,
    now: float,
    want_replicas: int,
    want_recheck: float | None,
    want_memory: ScaleMemory,
) -> None:
    before = ScaleMemory(memory.had_models, dict(memory.no_models_since))
    p, after = plan(runtime(), models=(SKLEARN,) if has_models else (), memory=memory, now=now)
    assert replicas(p) == {"modelmesh-serving-rt": want_replicas}
    assert p.recheck_after_s == want_recheck
    assert after == want_memory
    assert memory == before  # the input memory is never changed


def test_scale_to_zero_off_keeps_base_replicas_without_models() -> None:
    p, _ = plan(runtime(), cfg=config("scaleToZero: {enabled: false}"))
    assert replicas(p) == {"modelmesh-serving-rt": BASE}


def test_disabled_runtime_is_not_planned() -> None:
    p, memory = plan(runtime(disabled=True), models=(SKLEARN,))
    assert p.deployments == () and p.keep == frozenset() and memory == ScaleMemory()


def test_invalid_runtime_is_kept_and_named() -> None:
    bad = runtime("bad", containers=[{"name": "mm", "image": "x"}])
    p, _ = plan(bad, runtime(), models=(SKLEARN,))
    assert replicas(p) == {"modelmesh-serving-rt": BASE}
    assert p.keep == frozenset({"modelmesh-serving-bad"})
    ((name, reason),) = p.invalid
    assert name == "bad" and "container name 'mm' is reserved" in reason


def test_autoscaled_runtime_gets_a_governing_hpa_only_with_replicas() -> None:
    annotations = {hpa.AUTOSCALER_CLASS_ANNOTATION: "hpa"}
    scaled, _ = plan(runtime(annotations=annotations), models=(SKLEARN,))
    assert [a["metadata"]["name"] for a in scaled.autoscalers] == ["modelmesh-serving-rt"]
    assert set(scaled.governed) == {"modelmesh-serving-rt"}
    idle, _ = plan(runtime(annotations=annotations))
    assert idle.autoscalers == () and idle.governed == {}


def service(name: str, *, headless: bool = True, labelled: bool = True) -> dict[str, Any]:
    labels = dict(MANAGED_LABELS)
    if labelled:
        labels[SERVICE_LABEL] = name
    spec = {"clusterIP": "None"} if headless else {}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def planned(**fields: Any) -> NamespacePlan:
    p, _ = plan(runtime(), models=(SKLEARN,))
    return NamespacePlan(
        p.namespace,
        fields.get("deployments", p.deployments),
        fields.get("keep", frozenset()),
        fields.get("service", p.service),
        None,
        None,
        fields.get("autoscalers", ()),
    )


def named(*names: str) -> tuple[dict[str, Any], ...]:
    return tuple({"metadata": {"name": n}} for n in names)


SERVICE = "modelmesh-serving"


@pytest.mark.parametrize(
    ("plan_fields", "found", "want"),
    [
        pytest.param({}, Found(), Deletions(), id="empty namespace: nothing to delete"),
        pytest.param(
            {"keep": frozenset({"modelmesh-serving-bad"})},
            Found(
                deployments=(
                    "modelmesh-serving-rt",
                    "modelmesh-serving-bad",
                    "modelmesh-serving-gone",
                )
            ),
            Deletions(deployments=("modelmesh-serving-gone",)),
            id="a gone runtime's Deployment goes; planned and kept ones stay",
        ),
        pytest.param(
            {"autoscalers": named("modelmesh-serving-rt")},
            Found(autoscalers=("modelmesh-serving-rt", "modelmesh-serving-old")),
            Deletions(autoscalers=("modelmesh-serving-old",)),
            id="an HPA the plan lacks goes",
        ),
        pytest.param(
            {},
            Found(service=service(SERVICE, headless=False)),
            Deletions(recreate_service=True),
            id="headlessness changed: the Service is recreated",
        ),
        pytest.param(
            {},
            Found(service=service(SERVICE)),
            Deletions(),
            id="same headlessness: the Service is updated in place",
        ),
        pytest.param(
            {},
            Found(
                services=(service(SERVICE), service("old-mesh"), service("other", labelled=False))
            ),
            Deletions(services=("old-mesh",)),
            id="our Service of another name goes; an unlabelled one stays",
        ),
    ],
)
def test_deletions(plan_fields: dict[str, Any], found: Found, want: Deletions) -> None:
    assert deletions(planned(**plan_fields), found) == want
