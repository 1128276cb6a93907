"""Namespaces (cluster scope): which ones the operator manages.

A namespace is managed when it is labelled `modelmesh-enabled: "true"` and is not
Terminating, or when it is the operator's own (reference: modelmesh-features.md §3.8).
Startup reads the list once; this handler follows changes. A namespace that becomes
enabled gets its runtimes reconciled and its InferenceServices handed to kopf again (their
earlier events were filtered out). One that stops being enabled is left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mmesh.operator.handlers.lifecycle import context, is_enabled_namespace, touch_isvcs
from mmesh.operator.handlers.runtimes import Indexes, namespace_sync

logger = logging.getLogger(__name__)


def _cluster_scope(memo: Any, **_: Any) -> bool:
    ctx = getattr(memo, "ctx", None)
    return ctx is not None and not ctx.settings.namespace_scope


@kopf.on.event("", "v1", "namespaces", when=_cluster_scope)
async def namespace_changed(
    body: kopf.Body, name: str, type: str, memo: Any, **kwargs: Any
) -> None:
    ctx = context(memo)
    enabled = type != "DELETED" and is_enabled_namespace(body)
    if enabled == (name in ctx.enabled_namespaces):
        return
    if not enabled:
        ctx.enabled_namespaces.discard(name)
        logger.info("namespace %s is no longer managed", name)
        return
    ctx.enabled_namespaces.add(name)
    logger.info("namespace %s is managed now", name)
    namespace_sync(ctx).request(name, Indexes.of(kwargs))
    if ctx.leads:
        await touch_isvcs(ctx, name)
    ctx.wakeups.wake(name)
