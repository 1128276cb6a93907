"""Pure: what the pod runner does next for one Deployment.

A rolling update in the spirit of Kubernetes' default strategy, kept simple: pods of the current
template are started up to the wanted count; pods of an older template stop once as many current
pods are ready as are wanted (so traffic always has somewhere to go); surplus pods stop, those
not ready first, then the newest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_RESTART_DELAY_S = 20.0


@dataclass(frozen=True)
class PodView:
    name: str
    template_hash: str
    ready: bool
    started: float
    """When the pod was created (any monotonic clock); larger is newer."""


@dataclass(frozen=True)
class RolloutStep:
    start: int
    """How many pods of the current template to create."""
    stop: tuple[str, ...]
    """Pods to terminate."""


def plan_rollout(wanted: int, current_hash: str, pods: Sequence[PodView]) -> RolloutStep:
    current = [p for p in pods if p.template_hash == current_hash]
    older = [p for p in pods if p.template_hash != current_hash]
    start = max(0, wanted - len(current))
    surplus = sorted(current, key=lambda p: (p.ready, -p.started))[: max(0, len(current) - wanted)]
    ready_current = sum(1 for p in current if p.ready and p not in surplus)
    stop = [p.name for p in surplus]
    if older and ready_current >= wanted:
        stop += [p.name for p in older]
    return RolloutStep(start, tuple(stop))


def deployment_status(
    wanted: int, current_hash: str, pods: Sequence[PodView], generation: int
) -> dict[str, Any]:
    """The `status` Kubernetes' deployment controller would report for these pods."""
    ready = sum(1 for p in pods if p.ready)
    updated = sum(1 for p in pods if p.template_hash == current_hash)
    available = ready >= wanted
    condition = {
        "type": "Available",
        "status": "True" if available else "False",
        "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
    }
    return {
        "observedGeneration": generation,
        "replicas": len(pods),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, wanted - ready),
        "conditions": [condition],
    }


def restart_delay(restarts: int) -> float:
    """Back-off before a crashed container's next start: 0.5 s, doubling, at most 20 s (the
    kubelet starts at 10 s and doubles to 5 min; a local cluster should recover faster)."""
    return min(MAX_RESTART_DELAY_S, float(2 ** min(restarts, 10)) / 2)
