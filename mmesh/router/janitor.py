"""Background work of a router: request-rate tracking with copy scale-up, and the reaper that
drops copies held by instances whose lease expired.

Reaping is done by one router at a time, the live instance with the smallest id; while
membership changes two may act at once, which is harmless because every change is an
idempotent compare-and-swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router.errors import RouterError
from mmesh.router.inference import InferenceRouter
from mmesh.router.loading import now_ms
from mmesh.router.registry import UNCHANGED, Registry, Unchanged

logger = logging.getLogger(__name__)


def drop_instances(rec: ModelRecord | None, dead: frozenset[str]) -> ModelRecord | Unchanged:
    if rec is None:
        return UNCHANGED
    mentioned = (set(rec.instance_ids) | set(rec.failed_in)) & dead
    if not mentioned:
        return UNCHANGED
    for iid in mentioned:
        rec = rec.without_copy(InstanceId(iid)).without_failure(InstanceId(iid))
    return rec


class Janitor:
    def __init__(
        self,
        *,
        registry: Registry,
        router: InferenceRouter,
        instance_id: str,
        rate_interval_s: float,
        scaleup_rpm: int,
        reap_grace_s: float,
    ) -> None:
        self.registry = registry
        self.router = router
        self.instance_id = instance_id
        self.rate_interval_s = rate_interval_s
        self.scaleup_rpm = scaleup_rpm
        self.reap_grace_s = reap_grace_s
        self.requests: Counter[str] = Counter()
        self.rpm = 0
        self._missing_since: dict[str, float] = {}
        self._scaling: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def count(self, model_id: str) -> None:
        """Called for each request this instance's runtime serves."""
        self.requests[model_id] += 1

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.rate_interval_s, self.check_rates)),
            asyncio.create_task(self._every(self.reap_grace_s / 2, self.reap)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, period_s: float, step: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("background task failed")

    # --- rates and scale-up ----------------------------------------------------------

    def check_rates(self) -> None:
        counts, self.requests = self.requests, Counter()
        per_minute = 60 / self.rate_interval_s
        self.rpm = int(sum(counts.values()) * per_minute)
        for model_id, n in counts.items():
            if n * per_minute > self.scaleup_rpm and model_id not in self._scaling:
                self._spawn_scale_up(model_id, int(n * per_minute))

    def _spawn_scale_up(self, model_id: str, rpm: int) -> None:
        record = self.registry.models.get(model_id)
        if record is None:
            return
        live = self.router.live_peers()
        holders = sorted(iid for iid in record.instance_ids if iid in live)
        spare = [iid for iid, rec in live.items() if iid not in holders and not rec.shutting_down]
        if not spare or (holders and holders[0] != self.instance_id):
            return  # no room for another copy, or another holder decides
        logger.info("model %s at %d req/min per copy: adding a copy", model_id, rpm)
        self._scaling.add(model_id)
        task = asyncio.ensure_future(self.router.ensure_copy(model_id, record, extra=True))
        task.add_done_callback(lambda t: self._scaled(model_id, t))

    def _scaled(self, model_id: str, task: asyncio.Future[str]) -> None:
        self._scaling.discard(model_id)
        if not task.cancelled() and isinstance(task.exception(), RouterError):
            logger.warning("extra copy of %s failed: %s", model_id, task.exception())

    # --- reaper ----------------------------------------------------------------------

    async def reap(self) -> None:
        live = set(self.registry.instances.items) | {self.instance_id}
        if min(live) != self.instance_id:
            return
        dead = self._dead_instances(live)
        if not dead:
            return
        for model_id, versioned in list(self.registry.models.items.items()):
            rec = versioned.record
            if (set(rec.instance_ids) | set(rec.failed_in)) & dead:
                await self.registry.update_model(model_id, lambda r: drop_instances(r, dead))
        logger.info("dropped the copies of departed instances %s", sorted(dead))

    def _dead_instances(self, live: set[str]) -> frozenset[str]:
        now = now_ms() / 1000
        mentioned: set[str] = set()
        for versioned in self.registry.models.items.values():
            mentioned |= set(versioned.record.instance_ids) | set(versioned.record.failed_in)
        missing = mentioned - live
        for iid in list(self._missing_since):
            if iid not in missing:
                del self._missing_since[iid]
        for iid in missing:
            self._missing_since.setdefault(iid, now)
        return frozenset(i for i in missing if now - self._missing_since[i] >= self.reap_grace_s)
