"""This instance warms its own model server after a restart, so no request pays that first load.

When the router starts (a new pod's model server is as cold as a restarted one's),
whenever its runtime turns out to have lost its models (the model server restarted), and
whenever a load or a request finds the model server unreachable (down or starting), the
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
import time
from collections.abc import Collection, Sequence

from mmesh.core.records import ModelRecord
from mmesh.router.cluster import records
from mmesh.router.errors import RuntimeUnavailable
from mmesh.router.loading import LocalModels
from mmesh.router.pacing import Pacer
from mmesh.router.registry import Registry
from mmesh.router.warmup import allowed_here, first_allowed, trial_id

logger = logging.getLogger(__name__)

RUNTIME_WAIT_S = 90.0
"""How long the trial load keeps trying while the runtime does not answer (it is starting)."""
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
        if lost:
            self._start(tuple(lost), kept_means_warm=True)

    def begin_at_start(self, lost: Sequence[str]) -> None:
        """The router starts: its model server may have started with it (a new pod, a
        replaced one) or before it. Warm it unless it kept a copy or nothing is registered
        that it could load."""
        self._start(tuple(lost), kept_means_warm=True)

    def runtime_unreachable(self) -> None:
        """A load or a request found the model server unreachable: it is down or starting,
        and cold once back, though the copies it held may not be known lost yet."""
        self._start(tuple(self.local.newest_loaded()), kept_means_warm=False)

    def _start(self, lost: tuple[str, ...], *, kept_means_warm: bool) -> None:
        self.local.cold = True
        self.local.changed()
        if self._task is None or self._task.done():
            warm = self._warm(lost, kept_means_warm=kept_means_warm)
            self._task = asyncio.create_task(warm, name="warm-up")

    async def wait(self) -> None:
        """Return once the warm-up in progress, if any, has ended."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _warm(self, lost: tuple[str, ...], *, kept_means_warm: bool) -> None:
        try:
            if kept_means_warm and self.local.newest_loaded(1):  # the runtime kept a copy
                return
            record = await self._trial_model(lost)
            if record is None:
                return
            give_up = time.monotonic() + RUNTIME_WAIT_S
            while self.local.cold and time.monotonic() < give_up:
                try:
                    await self.local.trial_load(trial_id(self.local.instance_id), record)
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
