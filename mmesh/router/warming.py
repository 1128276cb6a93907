"""This instance warms its own model server after a start, so no request pays that first load.

At start, and whenever the runtime turns out to have lost its models (it restarted), the
instance is `cold` (its published record says so, and placement sends loads elsewhere)
until one load has finished on it. `Warmer` makes that load happen at once, with the model
`mmesh.router.warmup` picks; when there is none worth loading, or the loads tried all fail
to happen, the instance counts as warm again: it is never kept out of placement for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence

from mmesh.core.clock import now_ms
from mmesh.router.cluster import records
from mmesh.router.errors import RouterError
from mmesh.router.loading import LocalModels
from mmesh.router.pacing import Pacer
from mmesh.router.registry import Registry
from mmesh.router.warmup import RECENT_MS, worth_reloading, worth_warming

logger = logging.getLogger(__name__)

ATTEMPTS = 3
"""Models tried in turn when a warm-up load does not happen (another instance took the
model meanwhile, the model fails to load)."""
SCAN_SHARE = 0.5
"""The part of the event loop the registry scan may take while it runs."""


class Warmer:
    def __init__(
        self,
        *,
        local: LocalModels,
        registry: Registry,
        live: Callable[[], Collection[str]],
        labels: Collection[str],
    ) -> None:
        self.local = local
        self.registry = registry
        self.live = live
        self.labels = labels
        self._task: asyncio.Task[None] | None = None

    def begin(self, lost: Sequence[str] = ()) -> None:
        """The model server may be cold: say so, and warm it with a load of its own, first
        trying the copies it `lost` (the most recently used first)."""
        self.local.cold = True
        self.local.changed()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._warm(tuple(lost)), name="warm-up")

    async def wait(self) -> None:
        """Return once the warm-up in progress, if any, has ended."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _warm(self, lost: tuple[str, ...]) -> None:
        try:
            if self.local.cache.count:  # copies the runtime kept: it is not cold
                return
            for model_id in await self._choices(lost):
                if not self.local.cold:  # a request's load warmed it meanwhile
                    return
                if await self._load(model_id):
                    return
        finally:
            self.local.warmed()

    async def _load(self, model_id: str) -> bool:
        record = self.registry.models.get(model_id)
        if record is None:
            return False
        logger.info("warming the model server with a load of %s (recently used)", model_id)
        try:
            await self.local.ensure_loaded(model_id, record)
        except RouterError as exc:
            logger.info("warm-up load of %s did not happen: %s", model_id, exc)
            return False
        return True

    async def _choices(self, lost: tuple[str, ...]) -> list[str]:
        """Up to ATTEMPTS models worth a warm-up load: lost copies, then the registry's most
        recently used models."""
        me, labels, live = self.local.instance_id, self.labels, set(self.live())
        chosen = []
        for model_id in lost:
            record = self.registry.models.get(model_id)
            if record is not None and worth_reloading(record, me=me, live=live, labels=labels):
                chosen.append(model_id)
        if len(chosen) >= ATTEMPTS:
            return chosen[:ATTEMPTS]
        since_ms = now_ms() - RECENT_MS
        found = []
        pacer = Pacer(share=SCAN_SHARE)
        for model_id, record in records(self.registry.models):
            if worth_warming(record, me=me, live=live, labels=labels, since_ms=since_ms):
                found.append((record.last_used_ms, model_id))
            await pacer.step()
        found.sort(reverse=True)
        chosen += [model_id for _, model_id in found if model_id not in chosen]
        return chosen[:ATTEMPTS]
