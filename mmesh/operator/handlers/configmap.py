"""The `model-serving-config` ConfigMap: re-read on every change, hot-reloaded.

A valid change replaces the running configuration, re-reconciles every namespace
(Deployments, Service) and refreshes every status (URLs depend on it). An invalid one is
logged and posted as a Warning Event `InvalidConfig` on the ConfigMap (the cause in its
message), and the previous configuration stays in force; deleting the ConfigMap means defaults.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mmesh.operator.errors import InvalidConfig
from mmesh.operator.handlers import events
from mmesh.operator.handlers.lifecycle import context, load_config
from mmesh.operator.handlers.runtimes import Indexes, namespace_sync
from mmesh.operator.settings import CONFIG_MAP_NAME

logger = logging.getLogger(__name__)


def is_serving_config(name: str, namespace: str | None, memo: Any, **_: Any) -> bool:
    ctx = getattr(memo, "ctx", None)
    operator_ns = ctx.settings.namespace if ctx is not None else None
    return name == CONFIG_MAP_NAME and namespace == operator_ns


@kopf.on.event("", "v1", "configmaps", when=is_serving_config)
async def config_changed(body: kopf.Body, type: str, memo: Any, **kwargs: Any) -> None:
    ctx = context(memo)
    try:
        config = load_config(ctx.defaults_yaml, None if type == "DELETED" else body)  # parse
    except InvalidConfig as exc:
        logger.error("%s; keeping the previous configuration", exc)
        message = f"{exc}; keeping the previous configuration"
        events.post(body, type=events.WARNING, reason=events.INVALID_CONFIG, message=message)
        return
    if config == ctx.config:  # decide
        return
    ctx.config = config  # act
    namespace_sync(ctx).request(None, Indexes.of(kwargs))
    ctx.wakeups.wake()  # report
    logger.info("model-serving-config reloaded")
