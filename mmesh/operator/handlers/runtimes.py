"""ServingRuntime / ClusterServingRuntime handlers and the per-namespace reconcile.

Runtimes are indexed (namespace -> ServingRuntime; CLUSTER -> ClusterServingRuntime), and
any runtime event asks for a namespace reconcile. `NamespaceSync` coalesces those requests
into one worker per namespace that (level-triggered, from the indexes) renders every
runtime's Deployment with its scale decision, the `modelmesh-serving` Service and the etcd
Secret the runtime pods mount, applies them, and deletes Deployments of runtimes that are
gone or disabled. Failed reconciles are retried after 5 s; a running scale-to-zero grace
period re-runs the reconcile when it ends. Only the leader reconciles (a new leader redoes
every namespace); a Deployment scaled to zero or up from zero gets an Event.

In cluster scope with etcd authentication on, the etcd Secret of a namespace carries an etcd
user of that namespace's own (`etcd_users`), confined to the namespace's key prefix; the
reconcile makes sure etcd has that user and role (`ensure_namespace_user`), keeping the
password the Secret already holds. Passwords are never logged.

PVCs (`pvc.py`): each reconcile reads the namespace's storage-config Secret and, with
`allowAnyPVC`, which claims named by InferenceServices exist; each runtime Deployment mounts
its claims. No Secret or PVC watch (it would need list/watch of every Secret in the
cluster): the known namespaces are re-read every CLAIMS_POLL_SECS and reconciled when their
claims changed. Autoscaling (`hpa.py`): runtimes with the reference's HPA annotations get an
HPA and their Deployment's replicas are left to it; a stale HPA is deleted; ignored
annotation values are reported once per change (Warning Event on the runtime, and the log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_admin import AuthAdmin
from mmesh.operator import etcd_users, hpa, pvc
from mmesh.operator.errors import InvalidRuntime, InvalidSpec
from mmesh.operator.handlers import events
from mmesh.operator.handlers.lifecycle import Context, context, managed
from mmesh.operator.kube import Kube, Manifest, contains, secret_manifest
from mmesh.operator.namespace_plan import (
    ClaimFacts,
    Found,
    NamespacePlan,
    NamespaceView,
    ScaleMemory,
    deletions,
    owned_labels,
    plan_namespace,
)
from mmesh.operator.resources import (
    DEPLOYMENT_MODE_ANNOTATION,
    GROUP,
    ISVC_VERSION,
    MODELMESH_DEPLOYMENT_MODE,
    RUNTIME_VERSION,
    InferenceService,
    RuntimeKind,
    ServingRuntime,
)
from mmesh.operator.runtime_selection import (
    Requirement,
    effective_runtimes,
)
from mmesh.operator.service import MANAGED_LABELS
from mmesh.operator.serving_config import ServingConfig
from mmesh.operator.translation import to_registration

logger = logging.getLogger(__name__)

SR = (GROUP, RUNTIME_VERSION, "servingruntimes")
CSR = (GROUP, RUNTIME_VERSION, "clusterservingruntimes")
ISVC = (GROUP, ISVC_VERSION, "inferenceservices")
CLUSTER = "*"
"""Index key of ClusterServingRuntimes (they belong to every namespace)."""
RETRY_S = 5.0
_STATE = "namespaces"
PASSWORD_BYTES = 24
"""Random bytes in a namespace etcd user's password (URL-safe base64 in the Secret)."""
INVALID_AUTOSCALING = "InvalidAutoscaling"
"""Event reason: an autoscaling annotation of a runtime was ignored."""


@dataclass(frozen=True, slots=True)
class Indexes:
    """The kopf indexes a namespace reconcile reads (live views, always current)."""

    runtimes: kopf.Index[str, ServingRuntime]
    cluster_runtimes: kopf.Index[str, ServingRuntime]
    models: kopf.Index[str, Requirement]
    claims: Mapping[str, Iterable[tuple[Requirement, str]]] = field(default_factory=dict)
    """namespace -> (requirement, claim) of each InferenceService whose storage is a PVC."""

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Indexes:
        """From a handler's kwargs (kopf passes every index to every handler)."""
        return cls(
            kwargs["runtimes_idx"],
            kwargs["cluster_runtimes_idx"],
            kwargs["isvc_idx"],
            kwargs["isvc_claims_idx"],
        )

    def runtimes_of(self, namespace: str) -> tuple[ServingRuntime, ...]:
        """The namespace's runtimes, a ServingRuntime hiding a cluster one of its name."""
        here = [*self.runtimes.get(namespace, []), *self.cluster_runtimes.get(CLUSTER, [])]
        return effective_runtimes(here)

    def namespaces(self) -> set[str]:
        return {*self.runtimes.keys(), *self.models.keys()}


def observe_claims(
    kube: Kube, namespace: str, config: ServingConfig, wanted: frozenset[str]
) -> ClaimFacts:
    """Read the storage Secret's claims and which `wanted` claims exist (blocking)."""
    entries = kube.read_secret_data(namespace, config.storage_secret_name) or {}
    storage = pvc.storage_config_claims(entries)
    existing: set[str] = set()
    missing: set[str] = set()
    if config.allow_any_pvc:
        for claim in sorted(wanted - set(storage.names)):
            (existing if kube.claim_exists(namespace, claim) else missing).add(claim)
    return ClaimFacts(storage.names, frozenset(existing), frozenset(missing), storage.problems)


def log_claim_news(
    namespace: str, secret: str, claims: ClaimFacts, before: ClaimFacts | None
) -> None:
    """Log the problems and missing claims that `before` did not have (so a poll does not
    repeat them)."""
    for problem in sorted(set(claims.problems) - set(before.problems if before else ())):
        logger.warning("Secret %s/%s: %s", namespace, secret, problem)
    for claim in sorted(claims.missing - (before.missing if before else frozenset())):
        logger.warning("PVC %s/%s does not exist; not mounting it", namespace, claim)


@dataclass
class NamespaceSync:
    """Coalesced, level-triggered reconciles of each namespace's Deployments and Service."""

    ctx: Context
    indexes: Indexes | None = None
    _dirty: set[str] = field(default_factory=set)
    _workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _memory: ScaleMemory = field(default_factory=ScaleMemory)
    _confined: dict[str, str] = field(default_factory=dict, repr=False)
    """Namespace -> the password its etcd user was last ensured with by this process."""
    _users: bool | None = None
    """Whether namespaces get etcd users of their own (decided once, on first use)."""
    _claims_seen: dict[str, ClaimFacts] = field(default_factory=dict)
    """Namespace -> the PVC facts its last reconcile used (the poller compares against it)."""
    _poller: asyncio.Task[None] | None = None
    _reported: dict[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)
    """(namespace, kind, runtime) -> the autoscaling problems last reported."""

    def __post_init__(self) -> None:
        self.ctx.on_leader.append(self.request_all)

    def request_all(self) -> None:
        """Reconcile every known namespace soon (e.g. after becoming the leader)."""
        if self.indexes is not None:
            self.request(None, self.indexes)

    def request(self, namespace: str | None, indexes: Indexes) -> None:
        """Reconcile `namespace` (None: every known namespace) soon; only the leader acts."""
        self.indexes = indexes
        if not self.ctx.leads:
            return  # `request_all` runs when this replica takes over
        known = indexes.namespaces() | {self.ctx.settings.namespace}
        for ns in known if namespace is None else {namespace}:
            if not self.ctx.manages(ns):
                continue
            self._dirty.add(ns)
            if ns not in self._workers or self._workers[ns].done():
                self._workers[ns] = self.ctx.spawn(self._work(ns), f"sync {ns}")
        if self._poller is None or self._poller.done():
            self._poller = self.ctx.spawn(self._poll_claims(), "pvc poll")

    async def _work(self, namespace: str) -> None:
        while namespace in self._dirty and self.indexes is not None:
            self._dirty.discard(namespace)
            if not self.ctx.leads:
                return
            try:
                claims = await self._observe_claims(namespace, self.indexes)
                plan = self.plan(namespace, self.indexes, now=time.monotonic(), claims=claims)
                plan = await self._confine(plan)
                changes = await asyncio.to_thread(apply_plan, self.ctx.kube, plan)
                for change in changes:
                    change.announce()
                secret = self.ctx.config.storage_secret_name
                log_claim_news(namespace, secret, claims, self._claims_seen.get(namespace))
                self._claims_seen[namespace] = claims
                self._report(namespace, plan)
            except Exception:
                logger.exception("reconciling namespace %s failed; retrying", namespace)
                self._later(RETRY_S, namespace)
                continue
            if plan.recheck_after_s is not None:
                self._later(plan.recheck_after_s, namespace)

    async def _observe_claims(self, namespace: str, indexes: Indexes) -> ClaimFacts:
        wanted = pvc.wanted_claims(indexes.claims.get(namespace, []))
        kube, config = self.ctx.kube, self.ctx.config
        return await asyncio.to_thread(observe_claims, kube, namespace, config, wanted)

    async def _poll_claims(self) -> None:
        """Reconcile a namespace whose storage Secret's claims, or whose named PVCs' existence,
        changed since its last reconcile (nothing watches Secrets or PVCs)."""
        while True:
            await asyncio.sleep(self.ctx.settings.claims_poll_s)
            indexes = self.indexes
            if indexes is None or not self.ctx.leads:
                continue
            for namespace, seen in list(self._claims_seen.items()):
                worker = self._workers.get(namespace)
                if namespace in self._dirty or (worker is not None and not worker.done()):
                    continue  # a reconcile is under way; it reads the claims itself
                try:
                    now = await self._observe_claims(namespace, indexes)
                except Exception:
                    logger.warning("reading the PVCs of %s failed", namespace, exc_info=True)
                    continue
                if now != seen:
                    logger.info("PVCs of namespace %s changed; reconciling", namespace)
                    self.request(namespace, indexes)

    def _report(self, namespace: str, plan: NamespacePlan) -> None:
        """Post a Warning Event (and log) when a runtime's ignored autoscaling values change."""
        for ref, problems in plan.problems:
            meta = ref["metadata"]
            key = (namespace, str(ref["kind"]), str(meta["name"]))
            if self._reported.get(key, ()) == problems:
                continue
            self._reported[key] = problems
            if not problems:
                continue
            message = "; ".join(problems)
            logger.warning("%s %s in %s: %s", ref["kind"], meta["name"], namespace, message)
            events.post(ref, type=events.WARNING, reason=INVALID_AUTOSCALING, message=message)

    def _later(self, delay: float, namespace: str) -> None:
        indexes = self.indexes
        if indexes is not None:
            asyncio.get_running_loop().call_later(delay, self.request, namespace, indexes)

    def plan(
        self, namespace: str, indexes: Indexes, *, now: float, claims: ClaimFacts | None = None
    ) -> NamespacePlan:
        """Decide every object of the namespace from one snapshot of the indexes (no awaits),
        keeping the scale-to-zero memory the decision returns."""
        view = NamespaceView(
            namespace,
            indexes.runtimes_of(namespace),
            tuple(indexes.models.get(namespace, [])),
            tuple(indexes.claims.get(namespace, [])),
            claims or ClaimFacts(),
        )
        plan, self._memory = plan_namespace(
            view,
            self.ctx.config,
            etcd_secret_name=self.ctx.settings.etcd_secret_name,
            secret=self._secret(namespace),
            memory=self._memory,
            now=now,
        )
        for runtime, reason in plan.invalid:
            logger.error("cannot deploy %s in %s: %s", runtime, namespace, reason)
        return plan

    def _secret(self, namespace: str) -> Manifest | None:
        settings = self.ctx.settings
        if settings.namespace_scope:
            return None  # namespace scope: the runtime pods mount the operator's own Secret
        root = self.ctx.registrations.scope.root_for(namespace)
        text = settings.etcd_connection_for(root)
        secret = secret_manifest(namespace, settings.etcd_secret_name, {"etcd_connection": text})
        secret["metadata"]["labels"] = dict(MANAGED_LABELS)
        return secret

    async def _confine(self, plan: NamespacePlan) -> NamespacePlan:
        """Cluster scope with etcd auth: the Secret gets the namespace's own etcd user."""
        settings = self.ctx.settings
        if self._users is None:
            connection = settings.etcd_connection()
            self._users = etcd_users.enabled(connection, namespace_scope=settings.namespace_scope)
        if plan.secret is None or not self._users:
            return plan
        ns, name = plan.namespace, settings.etcd_secret_name
        existing = await asyncio.to_thread(self.ctx.kube.get, "Secret", ns, name)
        labels = (existing or {}).get("metadata", {}).get("labels") or {}
        if existing is not None and not contains(labels, MANAGED_LABELS):
            return plan  # apply_plan leaves someone else's Secret alone
        root = self.ctx.registrations.scope.root_for(ns)
        access = etcd_users.namespace_access(ns, root)
        password = etcd_users.stored_password(existing, access.user)
        if password is None or self._confined.get(ns) != password:
            password = password or secrets.token_urlsafe(PASSWORD_BYTES)
            kv = self.ctx.registrations.kv
            if not isinstance(kv, EtcdKV):
                raise TypeError(f"etcd users need an EtcdKV, not {type(kv).__name__}")
            await ensure_namespace_user(AuthAdmin(kv), access, password)
            self._confined[ns] = password
        text = settings.etcd_connection_for(root, credentials=(access.user, password))
        secret = secret_manifest(ns, name, {"etcd_connection": text})
        secret["metadata"]["labels"] = dict(MANAGED_LABELS)
        return dataclasses.replace(plan, secret=secret)


async def ensure_namespace_user(
    admin: AuthAdmin, access: etcd_users.NamespaceAccess, password: str
) -> tuple[etcd_users.Step, ...]:
    """Make etcd hold `access`'s role (READWRITE on the namespace's prefix only) and user
    (that role only, with `password`), changing only what differs; the steps taken."""
    roles = await admin.user_roles(access.user)
    grants = await admin.role_grants(access.role)
    works = roles is not None and await admin.password_works(access.user, password)
    steps = etcd_users.plan(access, etcd_users.Found(roles, grants, works))
    for step in steps:
        await _run_step(admin, access, password, step)
    if steps:
        logger.info(
            "etcd user %s of namespace %s: %s",
            access.user,
            access.namespace,
            ", ".join(step.op.value for step in steps),
        )
    return steps


async def _run_step(
    admin: AuthAdmin, access: etcd_users.NamespaceAccess, password: str, step: etcd_users.Step
) -> None:
    op, grant = etcd_users.Op, step.grant
    if step.op is op.ADD_ROLE:
        await admin.add_role(access.role)
    elif step.op is op.GRANT_PERMISSION and grant is not None:
        await admin.grant_permission(access.role, grant)
    elif step.op is op.REVOKE_PERMISSION and grant is not None:
        await admin.revoke_permission(access.role, grant[0], grant[1])
    elif step.op is op.ADD_USER:
        await admin.add_user(access.user, password)
    elif step.op is op.CHANGE_PASSWORD:
        await admin.change_password(access.user, password)
    elif step.op is op.GRANT_ROLE:
        await admin.grant_role(access.user, step.role)
    elif step.op is op.REVOKE_ROLE:
        await admin.revoke_role(access.user, step.role)
    else:
        raise ValueError(f"malformed etcd auth step {step}")


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """A runtime Deployment scaled to zero, or up from zero (or created scaled up)."""

    deployment: Manifest
    before: int | None
    """Replicas before; None: the Deployment did not exist."""
    after: int

    def announce(self) -> None:
        meta = self.deployment["metadata"]
        what = f"runtime Deployment {meta['namespace']}/{meta['name']}"
        if self.after == 0:
            reason, message = events.SCALED_TO_ZERO, f"{what} scaled to zero (no model needs it)"
        else:
            reason, message = events.SCALED_UP, f"{what} scaled up to {self.after} replicas"
        events.post(self.deployment, type=events.NORMAL, reason=reason, message=message)
        logger.info("%s", message)


def _scale_change(before: Manifest | None, after: Manifest) -> ScaleChange | None:
    old = None if before is None else int(before.get("spec", {}).get("replicas") or 0)
    if "replicas" not in after.get("spec", {}):
        return None  # left to the HPA, which only scales between min and max (never to 0)
    new = int(after.get("spec", {}).get("replicas") or 0)
    if ((old or 0) == 0) != (new == 0):
        return ScaleChange({**(before or {}), **after}, old, new)
    return None


def apply_plan(kube: Kube, plan: NamespacePlan) -> list[ScaleChange]:
    """Make the namespace match the plan (blocking; runs in a worker thread); return the
    runtime Deployments it scaled to zero or up from zero."""
    ns = plan.namespace
    service_name = plan.service["metadata"]["name"]
    ours = owned_labels(service_name)
    found = Found(
        tuple(d["metadata"]["name"] for d in kube.list("Deployment", ns, ours)),
        tuple(a["metadata"]["name"] for a in kube.list("HorizontalPodAutoscaler", ns, ours)),
        kube.get("Service", ns, service_name),
        tuple(kube.list("Service", ns, MANAGED_LABELS)),
    )
    gone = deletions(plan, found)
    changes: list[ScaleChange] = []
    if plan.secret is not None:
        _apply_secret(kube, plan.secret)
    # an HPA that is no longer wanted goes first: it would scale a Deployment sent to zero
    # (or back to podsPerRuntime) straight back
    for name in gone.autoscalers:
        kube.delete("HorizontalPodAutoscaler", ns, name)
    for deployment in plan.deployments:
        meta = deployment["metadata"]
        before = kube.get("Deployment", meta["namespace"], meta["name"])
        scaling = plan.governed.get(meta["name"])
        if scaling is not None:
            deployment = _governed(deployment, before, scaling)
        kube.apply(deployment)
        if (change := _scale_change(before, deployment)) is not None:
            changes.append(change)
    for autoscaler in plan.autoscalers:
        kube.apply(autoscaler)
    for name in gone.deployments:
        kube.delete("Deployment", ns, name)
    if gone.recreate_service:
        kube.delete("Service", ns, service_name)
    kube.apply(plan.service)
    for name in gone.services:
        kube.delete("Service", ns, name)
    return changes


def _governed(deployment: Manifest, before: Manifest | None, scaling: hpa.Autoscaling) -> Manifest:
    """The Deployment with the replicas the HPA leaves to us: min-scale when it is new or at
    zero, else none (a merge patch without `replicas` keeps the HPA's count)."""
    current = None if before is None else int(before.get("spec", {}).get("replicas") or 0)
    replicas = hpa.governed_replicas(current, scaling)
    spec = dict(deployment["spec"])
    if replicas is None:
        spec.pop("replicas", None)
    else:
        spec["replicas"] = replicas
    return {**deployment, "spec": spec}


def _apply_secret(kube: Kube, secret: Manifest) -> None:
    """Write the runtime pods' etcd Secret, but never over one someone else made (it may be
    the operator's own connection: rewriting its root prefix would move the mesh)."""
    meta = secret["metadata"]
    existing = kube.get("Secret", meta["namespace"], meta["name"])
    labels = (existing or {}).get("metadata", {}).get("labels") or {}
    if existing is not None and not contains(labels, MANAGED_LABELS):
        logger.warning(
            "leaving Secret %s/%s alone: not made by mmesh", meta["namespace"], meta["name"]
        )
        return
    kube.apply(secret)


def namespace_sync(ctx: Context) -> NamespaceSync:
    sync = ctx.state.get(_STATE)
    if not isinstance(sync, NamespaceSync):
        sync = ctx.state[_STATE] = NamespaceSync(ctx)
    return sync


def _parsed(body: kopf.Body, kind: RuntimeKind) -> ServingRuntime | None:
    try:
        return ServingRuntime.from_body(body, kind)
    except InvalidRuntime as exc:
        # None keeps the index's last value: the last valid version of the runtime stays in force
        logger.error("ignoring this version of %s (the last valid one stays): %s", kind.value, exc)
        return None


# ---------------------------------------------------------------- kopf handlers


@kopf.index(*SR)
def runtimes_idx(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, ServingRuntime] | None:
    runtime = _parsed(body, RuntimeKind.SERVING_RUNTIME)
    return None if runtime is None else {namespace or "": runtime}


@kopf.index(*CSR)
def cluster_runtimes_idx(body: kopf.Body, **_: Any) -> dict[str, ServingRuntime] | None:
    runtime = _parsed(body, RuntimeKind.CLUSTER_SERVING_RUNTIME)
    return None if runtime is None else {CLUSTER: runtime}


@kopf.index(*ISVC, annotations={DEPLOYMENT_MODE_ANNOTATION: MODELMESH_DEPLOYMENT_MODE})
def isvc_claims_idx(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, tuple[Requirement, str]] | None:
    """namespace -> (requirement, claim) of each live, valid InferenceService on a PVC."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return None
    try:
        registration = to_registration(InferenceService.from_body(body))
    except InvalidSpec:
        return None
    claim = pvc.model_claim(registration.storage.parameters)
    return None if claim is None else {namespace or "": (registration.requirement, claim)}


@kopf.on.event(*SR, when=managed)
async def runtime_changed(namespace: str | None, memo: Any, **kwargs: Any) -> None:
    ctx = context(memo)
    namespace_sync(ctx).request(namespace, Indexes.of(kwargs))
    ctx.wakeups.wake(namespace)


@kopf.on.event(*CSR)
async def cluster_runtime_changed(memo: Any, **kwargs: Any) -> None:
    ctx = context(memo)
    namespace_sync(ctx).request(None, Indexes.of(kwargs))
    ctx.wakeups.wake()
