"""Background work of a router.

Every router tracks request rates of the copies it serves and adds copies when one is busy
(rate above the scale-up threshold) or in steady use (a second copy for a model used across
more than `second_copy_age_s`). One router, elected through etcd (a `leader` key bound to
its instance lease), also runs the registry reaper: it drops copies of departed instances,
keeps each model's minimum number of copies, loads recently used models into free space,
and publishes the cluster-wide model gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mmesh.core.errors import StoreUnavailable
from mmesh.core.ids import InstanceId
from mmesh.core.kv import Lease
from mmesh.core.records import CopyState, ModelRecord, bytes_to_units
from mmesh.router.errors import RouterError
from mmesh.router.inference import InferenceRouter
from mmesh.router.loading import now_ms
from mmesh.router.metrics import RouterMetrics
from mmesh.router.placement import failed_instances
from mmesh.router.registry import UNCHANGED, Registry, Unchanged

logger = logging.getLogger(__name__)

PROACTIVE_RECENT_MS = 3_600_000
"""Only models used within this long are loaded into free space ahead of requests."""
PROACTIVE_PER_RUN = 3
MIN_COPIES_PER_RUN = 5


def drop_instances(rec: ModelRecord | None, dead: frozenset[str]) -> ModelRecord | Unchanged:
    if rec is None:
        return UNCHANGED
    mentioned = (set(rec.instance_ids) | set(rec.failed_in)) & dead
    if not mentioned:
        return UNCHANGED
    for iid in mentioned:
        rec = rec.without_copy(InstanceId(iid)).without_failure(InstanceId(iid))
    return rec


@dataclass(frozen=True, slots=True)
class JanitorPolicy:
    rate_interval_s: float
    scaleup_rpm: int
    reap_grace_s: float
    second_copy_age_s: float
    second_copy_gap_s: float
    failure_expiry_ms: int


class Janitor:
    def __init__(
        self,
        *,
        registry: Registry,
        router: InferenceRouter,
        metrics: RouterMetrics,
        instance_id: str,
        policy: JanitorPolicy,
        lease: Callable[[], Lease | None],
    ) -> None:
        self.registry = registry
        self.router = router
        self.metrics = metrics
        self.instance_id = instance_id
        self.policy = policy
        self._lease = lease
        self.requests: Counter[str] = Counter()
        self.rpm = 0
        self.is_leader = False
        self._in_use_since: dict[str, float] = {}
        self._last_use: dict[str, float] = {}
        self._missing_since: dict[str, float] = {}
        self._scaling: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def count(self, model_id: str) -> None:
        """Called for each request this instance's runtime serves."""
        self.requests[model_id] += 1

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.policy.rate_interval_s, self.check_rates)),
            asyncio.create_task(self._every(self.policy.reap_grace_s / 2, self.leader_duties)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.is_leader:
            with contextlib.suppress(StoreUnavailable):
                current = await self.registry.kv.get(self.registry.layout.leader_key)
                if current is not None and current.value.decode() == self.instance_id:
                    await self.registry.kv.delete_if(current.key, mod_revision=current.mod_revision)

    async def _every(self, period_s: float, step: Callable[[], object]) -> None:
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except StoreUnavailable as exc:
                logger.warning("background task skipped a round: %s", exc)
            except Exception:
                logger.exception("background task failed")
            await asyncio.sleep(period_s)

    # --- rates, scale-up and second copies -------------------------------------------

    def check_rates(self) -> None:
        counts, self.requests = self.requests, Counter()
        per_minute = 60 / self.policy.rate_interval_s
        self.rpm = int(sum(counts.values()) * per_minute)
        now = time.monotonic()
        for model_id, n in counts.items():
            self._note_use(model_id, now)
            rpm = int(n * per_minute)
            if rpm > self.policy.scaleup_rpm:
                self._scale_up(model_id, f"{rpm} req/min per copy")
            elif now - self._in_use_since[model_id] >= self.policy.second_copy_age_s:
                self._scale_up(model_id, "in steady use", only_if_single=True)
        for model_id in [
            m for m, t in self._last_use.items() if now - t > self.policy.second_copy_gap_s
        ]:
            self._last_use.pop(model_id)
            self._in_use_since.pop(model_id, None)

    def _note_use(self, model_id: str, now: float) -> None:
        last = self._last_use.get(model_id)
        if last is None or now - last > self.policy.second_copy_gap_s:
            self._in_use_since[model_id] = now
        self._last_use[model_id] = now

    def _scale_up(self, model_id: str, why: str, *, only_if_single: bool = False) -> None:
        record = self.registry.models.get(model_id)
        if record is None or model_id in self._scaling:
            return
        live = self.router.live_peers()
        holders = sorted(iid for iid in record.instance_ids if iid in live)
        spare = [iid for iid, rec in live.items() if iid not in holders and not rec.shutting_down]
        if not spare or (holders and holders[0] != self.instance_id):
            return  # no room for another copy, or another holder decides
        if only_if_single and len(holders) != 1:
            return
        logger.info("model %s %s: adding a copy", model_id, why)
        self._add_copy(model_id, record)

    def _add_copy(self, model_id: str, record: ModelRecord) -> None:
        self._scaling.add(model_id)
        task = asyncio.ensure_future(self.router.ensure_copy(model_id, record, extra=True))
        task.add_done_callback(lambda t: self._scaled(model_id, t))

    def _scaled(self, model_id: str, task: asyncio.Future[str]) -> None:
        self._scaling.discard(model_id)
        if not task.cancelled() and isinstance(task.exception(), RouterError):
            logger.warning("extra copy of %s failed: %s", model_id, task.exception())

    # --- leader ----------------------------------------------------------------------

    async def leader_duties(self) -> None:
        await self.elect()
        if not self.is_leader:
            return
        await self.reap()
        self.ensure_min_copies()
        self.load_proactively()
        self.publish_gauges()

    async def elect(self) -> None:
        """Take the leader key if nobody holds it; it goes with this instance's lease."""
        lease = self._lease()
        key = self.registry.layout.leader_key
        current = await self.registry.kv.get(key)
        if current is None and lease is not None:
            won = await self.registry.kv.put_if(
                key, self.instance_id.encode(), mod_revision=0, lease=lease
            )
            if won:
                logger.info("%s is now the leader", self.instance_id)
            current = await self.registry.kv.get(key)
        self.is_leader = current is not None and current.value.decode() == self.instance_id

    async def reap(self) -> None:
        live = set(self.registry.instances.items) | {self.instance_id}
        dead = self._dead_instances(live)
        if not dead:
            return
        for model_id, versioned in list(self.registry.models.items.items()):
            rec = versioned.record
            if (set(rec.instance_ids) | set(rec.failed_in)) & dead:
                await self.registry.update_model(model_id, lambda r: drop_instances(r, dead))
        logger.info("dropped the copies of departed instances %s", sorted(dead))

    def _dead_instances(self, live: set[str]) -> frozenset[str]:
        now = time.monotonic()
        mentioned: set[str] = set()
        for versioned in self.registry.models.items.values():
            mentioned |= set(versioned.record.instance_ids) | set(versioned.record.failed_in)
        missing = mentioned - live
        for iid in list(self._missing_since):
            if iid not in missing:
                del self._missing_since[iid]
        for iid in missing:
            self._missing_since.setdefault(iid, now)
        grace = self.policy.reap_grace_s
        return frozenset(i for i in missing if now - self._missing_since[i] >= grace)

    def ensure_min_copies(self) -> None:
        live = self.router.live_peers()
        serving = [i for i, rec in live.items() if not rec.shutting_down]
        started = 0
        for model_id, versioned in list(self.registry.models.items.items()):
            rec = versioned.record
            want = min(rec.min_copies, len(serving))
            have = sum(1 for iid in rec.instance_ids if iid in live)
            if have < want and model_id not in self._scaling:
                logger.info("model %s has %d of its %d minimum copies", model_id, have, want)
                self._add_copy(model_id, rec)
                started += 1
                if started >= MIN_COPIES_PER_RUN:
                    return

    def load_proactively(self) -> None:
        """Models used recently but loaded nowhere go into free space before a request has
        to wait for them."""
        live = self.router.live_peers()
        size = bytes_to_units(self.router.local.info.default_model_size_bytes)
        roomy = [
            i for i, rec in live.items() if not rec.shutting_down and rec.free_units >= 2 * size
        ]
        if not roomy:
            return
        cutoff = now_ms() - PROACTIVE_RECENT_MS
        expiry = self.policy.failure_expiry_ms
        idle = sorted(
            (
                (v.record.last_used_ms, m)
                for m, v in self.registry.models.items.items()
                if v.record.last_used_ms >= cutoff
                and m not in self._scaling
                and not any(iid in live for iid in v.record.instance_ids)
                and not failed_instances(v.record, now_ms=now_ms(), expiry_ms=expiry)
            ),
            reverse=True,
        )
        for _, model_id in idle[: min(PROACTIVE_PER_RUN, len(roomy))]:
            record = self.registry.models.get(model_id)
            if record is not None:
                logger.info("loading recently used model %s into free space", model_id)
                self._add_copy(model_id, record)

    def publish_gauges(self) -> None:
        live = set(self.router.live_peers())
        expiry, now = self.policy.failure_expiry_ms, now_ms()
        records = [v.record for v in self.registry.models.items.values()]
        self.metrics.cluster_models_managed.set(len(records))
        self.metrics.cluster_models_loaded.set(
            sum(1 for r in records if any(i in live for i in r.instances_in(CopyState.LOADED)))
        )
        self.metrics.cluster_models_failed.set(
            sum(1 for r in records if failed_instances(r, now_ms=now, expiry_ms=expiry))
        )
