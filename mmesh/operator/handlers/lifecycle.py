"""Operator start and stop, and the shared `Context` every handler reaches through `memo`.

Startup (before kopf watches anything): tune kopf (finalizer and annotation names, events),
connect etcd, try once to become the leader, build the Kubernetes client, read
`model-serving-config` and (cluster scope) the enabled namespaces once, and start the
registry watch that wakes the per-InferenceService status reporters and the leader
election loop. The handlers that write are filtered by `leading`; a replica that becomes the
leader later touches every InferenceService so kopf hands them over again. This module is
the only place that chooses implementations (EtcdKV, Kube). Cleanup releases the
leadership, stops the watch and closes etcd.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from mmesh.core.etcd import EtcdKV
from mmesh.operator.kube import Kube
from mmesh.operator.leadership import Leadership, default_identity, leader_key
from mmesh.operator.registrations import MeshScope, Registrations
from mmesh.operator.serving_config import DEFAULTS_FILE, ServingConfig, merge_config
from mmesh.operator.settings import CONFIG_MAP_KEY, CONFIG_MAP_NAME, OperatorSettings

logger = logging.getLogger(__name__)

FINALIZER = "serving.kserve.io/mmesh-finalizer"
ANNOTATIONS_PREFIX = "mmesh.serving.kserve.io"
ENABLED_LABEL = "modelmesh-enabled"
LEADER_ANNOTATION = "serving.kserve.io/mmesh-leader"
"""Set by a new leader on every InferenceService: the update makes kopf handle it again."""
DIFFBASE_KEY = "last-handled-configuration"
LAST_HANDLED_ANNOTATION = f"{ANNOTATIONS_PREFIX}/{DIFFBASE_KEY}"
"""Written by kopf once the create (or update) handlers of an object have all succeeded."""


class Wakeups:
    """One event per InferenceService status reporter; the registry watch sets them."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def register(self, namespace: str, name: str) -> asyncio.Event:
        event = self._events.setdefault((namespace, name), asyncio.Event())
        event.set()  # report once at start
        return event

    def unregister(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def wake(self, namespace: str | None = None, name: str | None = None) -> None:
        """Wake one reporter, every one of a namespace (name None), or all (both None)."""
        for (ns, n), event in self._events.items():
            if namespace in (None, ns) and name in (None, n):
                event.set()


@dataclass
class Context:
    """What the handlers share; one per operator process (memo.ctx)."""

    settings: OperatorSettings
    kube: Kube
    registrations: Registrations
    defaults_yaml: str
    config: ServingConfig
    leadership: Leadership
    wakeups: Wakeups = field(default_factory=Wakeups)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)
    enabled_namespaces: set[str] = field(default_factory=set)
    """Cluster scope: the namespaces labelled `modelmesh-enabled: "true"` (not Terminating)."""
    on_leader: list[Callable[[], None]] = field(default_factory=list)
    """Called when this replica becomes the leader after startup."""
    """Per-module shell state (e.g. the namespace sync), keyed by module."""

    @property
    def service_name(self) -> str:
        return self.config.inference_service_name

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task that `stop` cancels."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def leads(self) -> bool:
        """Whether this replica is the leader (only the leader writes anything)."""
        return self.leadership.is_leader

    def manages(self, namespace: str | None) -> bool:
        """Namespace scope serves only the operator's namespace; cluster scope, that one and
        every namespace labelled `modelmesh-enabled: "true"` (reference §3.8)."""
        if namespace == self.settings.namespace:
            return True
        return not self.settings.namespace_scope and namespace in self.enabled_namespaces


def context(memo: Any) -> Context:
    ctx = getattr(memo, "ctx", None)
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


def managed(namespace: str | None, memo: Any, **_: Any) -> bool:
    """kopf `when=` filter: the object lives in a namespace this operator serves."""
    ctx = getattr(memo, "ctx", None)
    return isinstance(ctx, Context) and ctx.manages(namespace)


def leading(namespace: str | None, memo: Any, **_: Any) -> bool:
    """kopf `when=` filter of the handlers that write: `managed`, and this replica leads
    (a follower leaves the object alone, without even kopf's progress annotations)."""
    ctx = getattr(memo, "ctx", None)
    return isinstance(ctx, Context) and ctx.manages(namespace) and ctx.leads


def is_enabled_namespace(body: Mapping[str, Any]) -> bool:
    """A Namespace labelled `modelmesh-enabled: "true"` and not Terminating."""
    labels = body.get("metadata", {}).get("labels") or {}
    terminating = body.get("status", {}).get("phase") == "Terminating"
    return labels.get(ENABLED_LABEL) == "true" and not terminating


def load_config(defaults_yaml: str, config_map: Mapping[str, Any] | None) -> ServingConfig:
    """Merge the ConfigMap's config.yaml (if any) over the defaults; may raise InvalidConfig."""
    data = (config_map or {}).get("data") or {}
    return merge_config(defaults_yaml, data.get(CONFIG_MAP_KEY))


def _defaults_yaml(settings: OperatorSettings) -> str:
    if settings.defaults_path.is_file():
        return settings.defaults_path.read_text()
    return importlib.resources.files("mmesh.operator").joinpath(DEFAULTS_FILE).read_text()


def _tune(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key=DIFFBASE_KEY
    )
    kopf_settings.posting.enabled = settings.post_events
    kopf_settings.posting.level = logging.WARNING


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    _tune(settings, ours)
    connection = ours.etcd_connection()  # parse: a bad value stops the operator here
    kube = await asyncio.to_thread(Kube.from_environment)
    kv = await EtcdKV.connect(connection)
    scope = MeshScope(connection.root_prefix, ours.namespace_scope, ours.namespace)
    defaults = _defaults_yaml(ours)
    found = await asyncio.to_thread(kube.read_config_map, ours.namespace, CONFIG_MAP_NAME)
    config = load_config(defaults, found)
    leadership = Leadership(kv, leader_key(connection.root_prefix), default_identity(ours.pod_name))
    await leadership.try_acquire()  # the leader at start needs no catch-up: kopf resumes all
    ctx = Context(ours, kube, Registrations(kv, scope), defaults, config, leadership)
    if not ours.namespace_scope:
        found_ns = await asyncio.to_thread(kube.list_namespaces)
        ctx.enabled_namespaces = {
            str(n["metadata"]["name"]) for n in found_ns if is_enabled_namespace(n)
        }
    leadership.on_gain = lambda: _took_over(ctx)
    ctx.spawn(ctx.registrations.watch(ctx.wakeups.wake), "registry").add_done_callback(_watch_ended)
    ctx.spawn(leadership.run(), "leadership")
    memo.ctx = ctx
    logger.info("operator started: etcd %s, namespace %s", connection.endpoint_text, ours.namespace)


async def _took_over(ctx: Context) -> None:
    """Newly the leader: have kopf look at every InferenceService again (the handlers
    skipped them while following), then redo every namespace and every status."""
    await touch_isvcs(ctx)
    for hook in ctx.on_leader:
        hook()
    ctx.wakeups.wake()


async def touch_isvcs(ctx: Context, namespace: str | None = None) -> None:
    """Annotate the InferenceServices (of `namespace`, or all managed ones) so that kopf
    hands them to the handlers again: their filters skipped them until now."""
    try:
        found = await asyncio.to_thread(ctx.kube.list_isvcs)
        for isvc in found:
            meta = isvc.get("metadata", {})
            ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
            if namespace in (None, ns) and ctx.manages(ns):
                await touch_isvc(ctx, ns, name)
    except Exception:  # the next event of each object catches up anyway
        logger.exception("touching the InferenceServices failed")


async def touch_isvc(ctx: Context, namespace: str, name: str) -> None:
    """Stamp this leader on one InferenceService: the update makes kopf handle it again."""
    stamp = f"{ctx.leadership.identity}@{time.time():.0f}"
    await asyncio.to_thread(ctx.kube.annotate_isvc, namespace, name, LEADER_ANNOTATION, stamp)


def _watch_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "registry watch died; statuses no longer follow etcd", exc_info=task.exception()
        )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    ctx = getattr(memo, "ctx", None)
    if not isinstance(ctx, Context):
        return
    await ctx.leadership.release()  # a successor need not wait for the lease to expire
    await ctx.registrations.kv.close()  # ends the registry watch cleanly
    for task in ctx.tasks:
        task.cancel()
    await asyncio.gather(*ctx.tasks, return_exceptions=True)


@kopf.on.probe(id="etcd")
async def etcd_probe(memo: kopf.Memo, **_: Any) -> str:
    ctx = context(memo)
    await ctx.registrations.kv.get(ctx.registrations.scope.watch_prefix)
    return "ok"
