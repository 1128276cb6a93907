"""Pure: a runtime's HorizontalPodAutoscaler, from the reference's runtime annotations.

Reference: modelmesh-serving controllers/hpa + the ServingRuntime webhook (§3.6). A runtime
(ServingRuntime or ClusterServingRuntime) annotated `serving.kserve.io/autoscalerClass: hpa`
gets an autoscaling/v2 HPA named like its Deployment, scaling that Deployment on one resource
metric:

- `serving.kserve.io/metrics`: `cpu` (default) or `memory`;
- `serving.kserve.io/targetUtilizationPercentage`: 1-100, default 80;
- `serving.kserve.io/min-scale`: at least 1, default 1;
- `serving.kserve.io/max-scale`: at least min-scale, default min-scale.

The reference's webhook rejects bad values; there is no webhook here, so each bad value is
reported (the shell posts an Event and logs it) and its default used instead, as the
reference's controller does with what it cannot parse. An unknown autoscaler class is reported
and means no HPA; `spec.replicas` next to the HPA annotation is reported and ignored.

While an HPA exists, the Deployment's replicas are the HPA's: `governed_replicas` sets them
only when the Deployment is new or scaled to zero (to min-scale), like the reference. A runtime
scaled to zero (no models) gets no HPA at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmesh.core.numbers import signed_whole_number
from mmesh.operator.resources import OwnerReference, ServingRuntime

AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
METRICS_ANNOTATION = "serving.kserve.io/metrics"
TARGET_ANNOTATION = "serving.kserve.io/targetUtilizationPercentage"
MIN_SCALE_ANNOTATION = "serving.kserve.io/min-scale"
MAX_SCALE_ANNOTATION = "serving.kserve.io/max-scale"
AUTOSCALING_ANNOTATIONS = (
    AUTOSCALER_CLASS_ANNOTATION,
    METRICS_ANNOTATION,
    TARGET_ANNOTATION,
    MIN_SCALE_ANNOTATION,
    MAX_SCALE_ANNOTATION,
)
HPA_CLASS = "hpa"
NO_CLASS = "none"
METRICS = ("cpu", "memory")
DEFAULT_METRIC = "cpu"
DEFAULT_UTILIZATION = 80
DEFAULT_MIN_REPLICAS = 1
RUNTIME_LABEL = "serving.kserve.io/inferenceservice"
"""The reference labels its HPA with the runtime's name under this key (a KServe habit)."""
COMPONENT_LABEL = "component"

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Autoscaling:
    """What the HPA of one runtime says."""

    metric: str = DEFAULT_METRIC
    target_utilization: int = DEFAULT_UTILIZATION
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MIN_REPLICAS


@dataclass(frozen=True, slots=True)
class AutoscalingDecision:
    autoscaling: Autoscaling | None
    """None: the runtime is not autoscaled (no annotation, `none`, or an unknown class)."""
    problems: tuple[str, ...] = ()
    """Each annotation value that was ignored, and why (for an Event and the log)."""


def autoscaling_of(runtime: ServingRuntime) -> AutoscalingDecision:
    """The runtime's HPA settings, with every invalid annotation reported and defaulted."""
    annotations = runtime.meta.annotations
    kind = annotations.get(AUTOSCALER_CLASS_ANNOTATION)
    if kind is None or kind == NO_CLASS:
        return AutoscalingDecision(None)
    if kind != HPA_CLASS:
        problem = (
            f"annotation {AUTOSCALER_CLASS_ANNOTATION}={kind!r} is not a supported autoscaler "
            f"class (supported: {HPA_CLASS}); the runtime is not autoscaled"
        )
        return AutoscalingDecision(None, (problem,))
    problems: list[str] = []
    metric = annotations.get(METRICS_ANNOTATION, DEFAULT_METRIC)
    if metric not in METRICS:
        problems.append(
            f"annotation {METRICS_ANNOTATION}={metric!r} is not a supported metric "
            f"(supported: {', '.join(METRICS)}); using {DEFAULT_METRIC}"
        )
        metric = DEFAULT_METRIC
    target = _integer(annotations, TARGET_ANNOTATION, DEFAULT_UTILIZATION, 1, 100, problems)
    low = _integer(annotations, MIN_SCALE_ANNOTATION, DEFAULT_MIN_REPLICAS, 1, None, problems)
    high = _integer(annotations, MAX_SCALE_ANNOTATION, low, 1, None, problems)
    if high < low:
        problems.append(
            f"annotation {MAX_SCALE_ANNOTATION}={high} is below "
            f"{MIN_SCALE_ANNOTATION}={low}; using {low}"
        )
        high = low
    if runtime.replicas is not None:
        problems.append(
            f"spec.replicas={runtime.replicas} cannot be combined with "
            f"{AUTOSCALER_CLASS_ANNOTATION}={HPA_CLASS}; the HPA sets the replicas"
        )
    return AutoscalingDecision(Autoscaling(metric, target, low, high), tuple(problems))


def _integer(
    annotations: Any, key: str, default: int, low: int, high: int | None, problems: list[str]
) -> int:
    raw = annotations.get(key)
    if raw is None:
        return default
    text = str(raw).strip()
    value = signed_whole_number(text)
    if value is None or value < low or (high is not None and value > high):
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        problems.append(f"annotation {key}={raw!r} must be {wanted}; using {default}")
        return default
    return value


def render_hpa(
    runtime: ServingRuntime,
    autoscaling: Autoscaling,
    *,
    namespace: str,
    deployment_name: str,
    labels: dict[str, str],
) -> Manifest:
    """The autoscaling/v2 HPA of the runtime's Deployment `deployment_name`; `labels` (the
    operator's own) mark it as managed so a stale one can be found and removed."""
    annotations = {
        k: v for k, v in runtime.meta.annotations.items() if k in AUTOSCALING_ANNOTATIONS
    }
    target = {"type": "Utilization", "averageUtilization": autoscaling.target_utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": deployment_name,
            "namespace": namespace,
            "labels": {
                **dict(runtime.meta.labels),
                RUNTIME_LABEL: runtime.name,
                COMPONENT_LABEL: "predictor",
                **labels,
            },
            "annotations": annotations,
            "ownerReferences": [OwnerReference.of_runtime(runtime).to_manifest()],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name,
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": autoscaling.metric, "target": target}}
            ],
        },
    }


def governed_replicas(current: int | None, autoscaling: Autoscaling) -> int | None:
    """The replicas to write on a Deployment the HPA scales: min-scale when the Deployment is
    new (`current` None) or at zero, else None (leave the HPA's choice alone)."""
    if current is None or current == 0:
        return autoscaling.min_replicas
    return None
