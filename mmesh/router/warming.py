"""This instance warms its own model server after a restart, so no request pays that first load.

When the router starts with copies of its earlier life to drop (its container restarted), and
whenever its runtime turns out to have lost its models (the model server restarted), the
instance is `cold`: its published record says so and placement sends new copies to warm
pods. `Warmer` then makes the model server's first load happen at once, as a trial load that
nothing routes to (mmesh.router.warmup). The instance is warm again when that load ends,
when a load of its own ends first, or when there is nothing to load: it is never kept out
of placement for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence

from mmesh.core.records import ModelRecord
from mmesh.router.cluster import records
from mmesh.router.errors import RuntimeUnavailable
from mmesh.router.loading import LocalModels
from mmesh.router.pacing import Pacer
from mmesh.router.registry import Registry
from mmesh.router.warmup import allowed_here, first_allowed, trial_id

logger = logging.getLogger(__name__)

RUNTIME_ATTEMPTS = 10
"""Tries of the trial load while the runtime does not answer (it is still starting)."""
RUNTIME_RETRY_S = 1.0
SCAN_SHARE = 0.5
"""The part of the event loop the registry scan may take while it runs."""


class Warmer:
    def __init__(self, *, local: LocalModels, registry: Registry, labels: Collection[str]) -> None:
        self.local = local
        self.registry = registry
        self.labels = labels
        self._task: asyncio.Task[None] | None = None

    def begin(self, lost: Sequence[str]) -> None:
        """The model server may be cold (it lost the copies `lost`, most recently used
        first): say so, and warm it with a trial load. Nothing to do when nothing was lost."""
        if not lost:
            return
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
            if self.local.newest_loaded(1):  # a copy the runtime kept: it is not cold
                return
            record = await self._trial_model(lost)
            if record is None:
                return
            for _ in range(RUNTIME_ATTEMPTS):
                if not self.local.cold:  # a load of its own ended first
                    return
                try:
                    await self.local.trial_load(trial_id(self.local.instance_id), record)
                    return
                except RuntimeUnavailable as exc:
                    logger.info("warm-up load waits for the runtime: %s", exc)
                    await asyncio.sleep(RUNTIME_RETRY_S)
        finally:
            self.local.warmed()

    async def _trial_model(self, lost: tuple[str, ...]) -> ModelRecord | None:
        """A lost copy's model, else the registry's most recently used model allowed here."""
        me, labels = self.local.instance_id, self.labels
        found = first_allowed((self.registry.models.get(m) for m in lost), me=me, labels=labels)
        if found is not None:
            return found
        pacer = Pacer(share=SCAN_SHARE)
        for _, record in records(self.registry.models):
            if allowed_here(record, me=me, labels=labels) and (
                found is None or record.last_used_ms > found.last_used_ms
            ):
                found = record
            await pacer.step()
        return found
