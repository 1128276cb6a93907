"""Pure: what a namespace should hold, and what of it must go.

`plan_namespace` decides every object of one namespace from a snapshot of the indexes
(`NamespaceView`), the config, and the scale-to-zero memory: each enabled runtime's
Deployment with its replica count, the HPAs of autoscaled runtimes, the `modelmesh-serving`
Service; it returns the plan and the new memory (which runtimes had models, and since when
they have none). `deletions` compares the plan with what the namespace holds (`Found`) and
names what to delete. Callers: handlers/runtimes.py, which reads the indexes and the API,
calls these, and applies the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mmesh.operator import hpa, pvc
from mmesh.operator.deployment import render_deployment
from mmesh.operator.errors import InvalidRuntime
from mmesh.operator.naming import deployment_name
from mmesh.operator.pod_parts import Manifest, NamespaceFacts
from mmesh.operator.resources import ServingRuntime
from mmesh.operator.runtime_selection import Requirement, is_enabled, runtime_has_models
from mmesh.operator.scaling import ScaleDecision, scale_decision
from mmesh.operator.service import MANAGED_LABELS, SERVICE_LABEL, needs_recreate, render_service
from mmesh.operator.serving_config import ServingConfig

RuntimeKey = tuple[str, str]
"""(namespace, runtime name)."""


@dataclass(frozen=True, slots=True)
class ClaimFacts:
    """What the API says about the namespace's PVCs (read before planning)."""

    storage: tuple[str, ...] = ()
    """Claims of the storage-config Secret's `pvc` entries."""
    existing: frozenset[str] = frozenset()
    """Claims named by InferenceServices that exist (only looked up with allowAnyPVC)."""
    missing: frozenset[str] = frozenset()
    """Claims named by InferenceServices that do not exist (not mounted)."""
    problems: tuple[str, ...] = ()
    """Storage Secret entries that could not be read."""


@dataclass(frozen=True, slots=True)
class NamespaceView:
    """One consistent snapshot of the indexes for one namespace."""

    namespace: str
    runtimes: tuple[ServingRuntime, ...]
    """The namespace's effective runtimes (a ServingRuntime hides a cluster one)."""
    models: tuple[Requirement, ...] = ()
    model_claims: tuple[tuple[Requirement, str], ...] = ()
    """(requirement, claim) of each InferenceService whose storage is a PVC."""
    claims: ClaimFacts = ClaimFacts()


@dataclass(frozen=True, slots=True)
class ScaleMemory:
    """What scale-to-zero remembers between reconciles, per (namespace, runtime)."""

    had_models: frozenset[RuntimeKey] = frozenset()
    no_models_since: Mapping[RuntimeKey, float] = field(default_factory=dict)
    """When a runtime that had models lost its last one (the grace period's start)."""

    def seen(self, key: RuntimeKey, *, has_models: bool, now: float) -> ScaleMemory:
        """The memory after seeing the runtime with or without models at `now`."""
        since = dict(self.no_models_since)
        if has_models:
            since.pop(key, None)
            return ScaleMemory(self.had_models | {key}, since)
        if key in self.had_models:
            since[key] = now
            return ScaleMemory(self.had_models - {key}, since)
        return self


@dataclass(frozen=True, slots=True)
class NamespacePlan:
    namespace: str
    deployments: tuple[Manifest, ...]
    keep: frozenset[str]
    """Deployments to leave alone (their runtime is invalid right now)."""
    service: Manifest
    secret: Manifest | None
    recheck_after_s: float | None
    autoscalers: tuple[Manifest, ...] = ()
    """The HPAs of autoscaled runtimes (any other HPA of ours in the namespace goes)."""
    governed: Mapping[str, hpa.Autoscaling] = field(default_factory=dict)
    """Deployment name -> its HPA's settings: the HPA owns those replicas."""
    problems: tuple[tuple[Manifest, tuple[str, ...]], ...] = ()
    """(runtime reference, ignored autoscaling values) of every deployed runtime."""
    invalid: tuple[tuple[str, str], ...] = ()
    """(runtime name, why it cannot be deployed) of every runtime left as it was."""


@dataclass(slots=True)
class _Draft:
    deployments: list[Manifest] = field(default_factory=list)
    autoscalers: list[Manifest] = field(default_factory=list)
    governed: dict[str, hpa.Autoscaling] = field(default_factory=dict)
    problems: list[tuple[Manifest, tuple[str, ...]]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)
    rechecks: list[float] = field(default_factory=list)


def plan_namespace(
    view: NamespaceView,
    config: ServingConfig,
    *,
    etcd_secret_name: str,
    secret: Manifest | None,
    memory: ScaleMemory,
    now: float,
) -> tuple[NamespacePlan, ScaleMemory]:
    """Every object the namespace should hold, and the scale memory after this look.

    An enabled runtime that cannot be rendered keeps its current Deployment (`keep`); an
    autoscaled runtime with replicas gets an HPA that governs them.
    """
    draft = _Draft()
    for runtime in (r for r in view.runtimes if is_enabled(r)):
        key = (view.namespace, runtime.name)
        has = runtime_has_models(runtime, list(view.models), rest_enabled=config.rest_proxy.enabled)
        memory = memory.seen(key, has_models=has, now=now)
        decision = _scale(runtime, config, has_models=has, memory=memory, key=key, now=now)
        if decision.recheck_after_s is not None:
            draft.rechecks.append(decision.recheck_after_s)
        _plan_runtime(draft, view, runtime, config, etcd_secret_name, decision)
    plan = NamespacePlan(
        view.namespace,
        tuple(draft.deployments),
        frozenset(draft.keep),
        render_service(config, namespace=view.namespace),
        secret,
        min(draft.rechecks, default=None),
        tuple(draft.autoscalers),
        draft.governed,
        tuple(draft.problems),
        tuple(draft.invalid),
    )
    return plan, memory


def _scale(
    runtime: ServingRuntime,
    config: ServingConfig,
    *,
    has_models: bool,
    memory: ScaleMemory,
    key: RuntimeKey,
    now: float,
) -> ScaleDecision:
    return scale_decision(
        runtime,
        has_models=has_models,
        no_models_since=memory.no_models_since.get(key),
        now=now,
        grace_s=config.scale_to_zero.grace_period_seconds,
        pods_per_runtime=config.pods_per_runtime,
        scale_to_zero=config.scale_to_zero.enabled,
    )


def _plan_runtime(
    draft: _Draft,
    view: NamespaceView,
    runtime: ServingRuntime,
    config: ServingConfig,
    etcd_secret_name: str,
    decision: ScaleDecision,
) -> None:
    namespace = view.namespace
    name = deployment_name(runtime.name, config.inference_service_name)
    mounts = pvc.runtime_claims(
        runtime,
        storage=view.claims.storage,
        models=view.model_claims,
        existing=view.claims.existing,
        allow_any=config.allow_any_pvc,
        rest_enabled=config.rest_proxy.enabled,
    )
    facts = NamespaceFacts(namespace, etcd_secret_name=etcd_secret_name, pvc_names=mounts)
    try:
        draft.deployments.append(
            render_deployment(runtime, config, facts, replicas=decision.replicas)
        )
    except InvalidRuntime as exc:
        draft.invalid.append((runtime.name, str(exc)))
        draft.keep.add(name)
        return
    scaling = hpa.autoscaling_of(runtime)
    draft.problems.append((runtime_reference(runtime, namespace), scaling.problems))
    if scaling.autoscaling is not None and decision.replicas > 0:
        draft.governed[name] = scaling.autoscaling
        draft.autoscalers.append(
            hpa.render_hpa(
                runtime,
                scaling.autoscaling,
                namespace=namespace,
                deployment_name=name,
                labels=owned_labels(config.inference_service_name),
            )
        )


def runtime_reference(runtime: ServingRuntime, namespace: str) -> Manifest:
    """The runtime as an Event's object; a ClusterServingRuntime's Events go to `namespace`
    (the one whose Deployment the problem concerns)."""
    meta = {"name": runtime.name, "namespace": runtime.meta.namespace or namespace}
    if runtime.meta.uid:
        meta["uid"] = runtime.meta.uid
    return {"apiVersion": runtime.api_version, "kind": runtime.kind.value, "metadata": meta}


def owned_labels(service_name: str) -> dict[str, str]:
    """The labels of the Deployments and HPAs that belong to the `service_name` mesh."""
    return {**MANAGED_LABELS, SERVICE_LABEL: service_name}


# ---------------------------------------------------------------- deletions


@dataclass(frozen=True, slots=True)
class Found:
    """What the namespace holds now, of the kinds the plan owns (read before acting)."""

    deployments: tuple[str, ...] = ()
    """Names of the Deployments carrying this mesh's labels."""
    autoscalers: tuple[str, ...] = ()
    """Names of the HPAs carrying this mesh's labels."""
    service: Manifest | None = None
    """The mesh's Service as it is (None: absent)."""
    services: tuple[Manifest, ...] = ()
    """Every Service carrying mmesh's managed labels."""


@dataclass(frozen=True, slots=True)
class Deletions:
    deployments: tuple[str, ...] = ()
    autoscalers: tuple[str, ...] = ()
    recreate_service: bool = False
    """The Service must be deleted before it is applied (a field it has cannot change)."""
    services: tuple[str, ...] = ()
    """Other meshes' Services of ours (the Service name changed)."""


def deletions(plan: NamespacePlan, found: Found) -> Deletions:
    """What to delete so the namespace holds only the plan: our Deployments of runtimes that
    are gone or disabled (not one kept as invalid), our HPAs the plan lacks, the Service when
    it must be recreated, and our Services of another name."""
    wanted = {_name(d) for d in plan.deployments} | plan.keep
    autoscalers = {_name(a) for a in plan.autoscalers}
    service_name = _name(plan.service)
    return Deletions(
        tuple(name for name in found.deployments if name not in wanted),
        tuple(name for name in found.autoscalers if name not in autoscalers),
        found.service is not None and needs_recreate(found.service, plan.service),
        tuple(
            _name(other)
            for other in found.services
            if _name(other) != service_name and SERVICE_LABEL in _labels(other)
        ),
    )


def _name(manifest: Manifest) -> str:
    return str(manifest["metadata"]["name"])


def _labels(manifest: Manifest) -> Mapping[str, str]:
    labels: Mapping[str, str] = manifest["metadata"].get("labels") or {}
    return labels
