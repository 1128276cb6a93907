"""Operator start and stop, and the shared `Context` every handler reaches through `memo`.

Startup (before kopf watches anything): tune kopf (finalizer and annotation names, events),
connect etcd, build the Kubernetes client, read `model-serving-config` once, and start the
registry watch that wakes the per-InferenceService status reporters. This module is the
only place that chooses implementations (EtcdKV, Kube). Cleanup stops the watch and closes
etcd.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from mmesh.core.etcd import EtcdKV
from mmesh.operator.kube import Kube
from mmesh.operator.registrations import MeshScope, Registrations
from mmesh.operator.serving_config import DEFAULTS_FILE, ServingConfig, merge_config
from mmesh.operator.settings import CONFIG_MAP_KEY, CONFIG_MAP_NAME, OperatorSettings

logger = logging.getLogger(__name__)

FINALIZER = "serving.kserve.io/mmesh-finalizer"
ANNOTATIONS_PREFIX = "mmesh.serving.kserve.io"


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
    wakeups: Wakeups = field(default_factory=Wakeups)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)
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

    def manages(self, namespace: str | None) -> bool:
        """Namespace scope serves only the operator's namespace; cluster scope, all."""
        return not self.settings.namespace_scope or namespace == self.settings.namespace


def context(memo: Any) -> Context:
    ctx = getattr(memo, "ctx", None)
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


def managed(namespace: str | None, memo: Any, **_: Any) -> bool:
    """kopf `when=` filter: the object lives in a namespace this operator serves."""
    ctx = getattr(memo, "ctx", None)
    return isinstance(ctx, Context) and ctx.manages(namespace)


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
        prefix=ANNOTATIONS_PREFIX
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
    ctx = Context(ours, kube, Registrations(kv, scope), defaults, config)
    ctx.spawn(ctx.registrations.watch(ctx.wakeups.wake), "registry").add_done_callback(_watch_ended)
    memo.ctx = ctx
    logger.info("operator started: etcd %s, namespace %s", connection.endpoint_text, ours.namespace)


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
    await ctx.registrations.kv.close()  # ends the registry watch cleanly
    for task in ctx.tasks:
        task.cancel()
    await asyncio.gather(*ctx.tasks, return_exceptions=True)


@kopf.on.probe(id="etcd")
async def etcd_probe(memo: kopf.Memo, **_: Any) -> str:
    ctx = context(memo)
    await ctx.registrations.kv.get(ctx.registrations.scope.watch_prefix)
    return "ok"
