"""Pure: how many replicas a runtime's Deployment runs (scale to zero, §3.6).

`scale_decision` picks podsPerRuntime, spec.replicas, or zero when no model could use the
runtime once the grace period has passed. Callers: the kopf runtime handlers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmesh.operator.resources import ServingRuntime


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    replicas: int
    recheck_after_s: float | None = None
    """Reconcile again after this long: the grace period is still running."""


def base_replicas(runtime: ServingRuntime, pods_per_runtime: int) -> int:
    """`spec.replicas` when set, else the config's podsPerRuntime."""
    return runtime.replicas if runtime.replicas is not None else pods_per_runtime


def scale_decision(
    runtime: ServingRuntime,
    *,
    has_models: bool,
    no_models_since: float | None,
    now: float,
    grace_s: float,
    pods_per_runtime: int,
    scale_to_zero: bool = True,
) -> ScaleDecision:
    """Replicas for the runtime's Deployment (reference: scale to zero, §3.6).

    With models it could serve (or scale-to-zero off) the runtime runs its base replicas.
    Without, it goes to zero once `grace_s` has passed since `no_models_since`. The shell
    keeps `no_models_since` per runtime: set it to `now` when a runtime that had models has
    none, clear it when models come back. None with no models (never seen with models, e.g.
    after an operator restart) scales to zero at once, as the reference does.
    """
    base = base_replicas(runtime, pods_per_runtime)
    if has_models or not scale_to_zero:
        return ScaleDecision(base)
    if no_models_since is None:
        return ScaleDecision(0)
    remaining = grace_s - (now - no_models_since)
    if remaining <= 0:
        return ScaleDecision(0)
    return ScaleDecision(base, recheck_after_s=remaining)
