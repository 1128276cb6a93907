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
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from mmesh.core.clock import now_ms
from mmesh.core.errors import StoreUnavailable
from mmesh.core.failures import failed_instances
from mmesh.core.ids import InstanceId
from mmesh.core.kv import Lease
from mmesh.core.labels import required_labels, satisfies
from mmesh.core.records import InstanceRecord, ModelRecord, bytes_to_units
from mmesh.router import copies
from mmesh.router.cache import EntryState
from mmesh.router.cluster import records, serving
from mmesh.router.errors import RouterError
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.pacing import Pacer
from mmesh.router.registry import UNCHANGED, Registry, Unchanged
from mmesh.router.usage import Usage

logger = logging.getLogger(__name__)

PROACTIVE_RECENT_MS = 3_600_000
"""Only models used within this long are loaded into free space ahead of requests."""
PROACTIVE_PER_RUN = 3
MIN_COPIES_PER_RUN = 5
GC_FREEZE_INTERVAL_S = 5.0
"""Survivors are frozen this often, so that a full collection (which CPython starts by
itself) only ever traverses the few objects made since the last freeze: a burst of loads
or registrations must not leave 10^5 objects in the collector's oldest generation."""
GC_UNFREEZE_EVERY = 720
"""Freezes between two full collections that also reclaim cycles among frozen objects
(hourly)."""


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
    copy_policy: copies.CopyPolicy | None = None
    """Windows of the copy scale-down (`scale_down_idle`); None turns it off."""
    scaledown_interval_s: float = 360.0
    retire_drain_s: float = 30.0
    """How long a retired copy waits for requests still running on it before it unloads."""


class Leadership:
    """Whether this instance holds the leader key, as of its last election; the janitor
    elects, leader-only work elsewhere reads it."""

    def __init__(self) -> None:
        self.held = False

    def __call__(self) -> bool:
        return self.held


class CopyPlacer(Protocol):
    """What the janitor asks of the inference path (the router's `InferenceRouter`)."""

    local: LocalModels

    def live_peers(self) -> dict[str, InstanceRecord]: ...

    async def ensure_copy(self, model_id: str, record: ModelRecord, *, extra: bool = False) -> str:
        """Returns the instance that holds or loaded the copy."""
        ...


class Janitor:
    def __init__(
        self,
        *,
        registry: Registry,
        router: CopyPlacer,
        usage: Usage,
        metrics: RouterMetrics,
        instance_id: str,
        policy: JanitorPolicy,
        lease: Callable[[], Lease | None],
        leadership: Leadership,
        duties: Sequence[Callable[[], None]],
    ) -> None:
        self.registry = registry
        self.router = router
        self.usage = usage
        self.metrics = metrics
        self.instance_id = instance_id
        self.policy = policy
        self._lease = lease
        self.leadership = leadership
        self._leading_with: Lease | None = None
        """The lease this instance held the leader key with at its last election."""
        self.extra_duties = tuple(duties)
        """Other leader-only work run with each survey (first loads, vmodel transitions)."""
        self.model_rpm: dict[str, int] = {}
        """Requests/min each local copy served in the last rate window."""
        self._in_use_since: dict[str, float] = {}
        self._last_use: dict[str, float] = {}
        self._missing_since: dict[str, float] = {}
        self._scaling: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._gc = GcFreezer()

    @property
    def is_leader(self) -> bool:
        return self.leadership.held

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.policy.rate_interval_s, self.check_rates)),
            asyncio.create_task(self._every(self.policy.reap_grace_s / 2, self.leader_duties)),
            asyncio.create_task(self._every(GC_FREEZE_INTERVAL_S, self._gc.tick)),
        ]
        if self.policy.copy_policy is not None:
            period = self.policy.scaledown_interval_s
            self._tasks.append(asyncio.create_task(self._every(period, self.scale_down_idle)))

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
        per_minute = 60 / self.policy.rate_interval_s
        counts = self.usage.take(per_minute)
        self.model_rpm = {m: int(n * per_minute) for m, n in counts.items()}
        now = time.monotonic()
        for model_id, n in counts.items():
            self._note_use(model_id, now)
            rpm = int(n * per_minute)
            if copies.wants_another_copy(rpm, self.policy.scaleup_rpm):
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
        required = required_labels(record.model_type)
        spare = [
            iid
            for iid in serving(live)
            if iid not in holders and satisfies(live[iid].labels, required)
        ]
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

    # --- copy scale-down (decisions: mmesh.router.copies) ------------------------------

    async def scale_down_idle(self) -> None:
        """Tell the registry that shared models are still in use here, then retire the
        local extra copies that have gone idle."""
        policy = self.policy.copy_policy
        if policy is None:
            return
        view, held = self._mesh_view(), self._held_copies()
        records = {c.model_id: r for c in held if (r := self.registry.models.get(c.model_id))}
        for copy in held:
            record = records.get(copy.model_id)
            used = record and copies.last_use_to_publish(copy, record, view, policy)
            if used:
                await self._publish_last_use(copy.model_id, used)
        local = self.router.local
        capacity = local.cache.capacity_units
        for model_id in copies.plan_scale_down(
            held, records, view, policy, capacity_units=capacity
        ):
            keep, gap = records[model_id].min_copies, policy.unload_gap_ms
            drain = self.policy.retire_drain_s
            if await local.retire(model_id, keep=keep, gap_ms=gap, drain_s=drain):
                logger.info("model %s: removing this idle extra copy", model_id)

    def _mesh_view(self) -> copies.MeshView:
        live = {i: r for i, r in self.router.live_peers().items() if not r.shutting_down}
        capacity = sum(r.capacity_units for r in live.values())
        free = sum(r.free_units for r in live.values())
        lrus = [r.lru_time_ms for r in live.values() if r.lru_time_ms is not None]
        now = now_ms()
        return copies.MeshView(
            instance_id=self.instance_id,
            live_rpm={i: r.rpm for i, r in live.items()},
            free_fraction=free / capacity if capacity else 1.0,
            cache_age_ms=now - min(lrus) if lrus else 0,
            now_ms=now,
        )

    def _held_copies(self) -> list[copies.LocalCopy]:
        return [
            copies.LocalCopy(e.model_id, e.units, e.last_used_ms, self.model_rpm.get(e.model_id, 0))
            for e in self.router.local.cache.entries()
            if e.state is EntryState.LOADED
        ]

    async def _publish_last_use(self, model_id: str, used_ms: int) -> None:
        await self.registry.update_model(
            model_id,
            lambda r: (
                replace(r, last_used_ms=used_ms)
                if r is not None and r.last_used_ms < used_ms
                else UNCHANGED
            ),
        )

    # --- leader ----------------------------------------------------------------------

    async def leader_duties(self) -> None:
        await self.elect()
        if not self.is_leader:
            return
        survey = await self.survey()
        await self.reap(survey)
        self.ensure_min_copies(survey)
        self.load_proactively(survey)
        self.publish_gauges(survey)
        for duty in self.extra_duties:
            duty()

    async def survey(self) -> Survey:
        """One pass over every record, paced: a registry of 100K models must never hold
        the event loop (mmesh.router.pacing)."""
        live = self.router.live_peers()
        now, expiry = now_ms(), self.policy.failure_expiry_ms
        result = Survey(live=live)
        cutoff = now - PROACTIVE_RECENT_MS
        held = list(self.registry.models.items.items())  # a snapshot: its entries are frozen
        pacer = Pacer()
        for model_id, entry in held:
            result.note(model_id, entry.record, now_ms=now, expiry_ms=expiry, cutoff_ms=cutoff)
            await pacer.step()
        return result

    async def elect(self) -> None:
        """Take the leader key if nobody holds it; it goes with this instance's lease.

        A leader whose lease is still the one it held the key with keeps leading without
        reading the key again: the key lives exactly as long as that lease. So a lone
        router makes no etcd read between its heartbeats."""
        lease = self._lease()
        if lease is not None and self.leadership.held and lease is self._leading_with:
            return
        key = self.registry.layout.leader_key
        current = await self.registry.kv.get(key)
        if current is None and lease is not None:
            won = await self.registry.kv.put_if(
                key, self.instance_id.encode(), mod_revision=0, lease=lease
            )
            if won:
                logger.info("%s is now the leader", self.instance_id)
            current = await self.registry.kv.get(key)
        self.leadership.held = current is not None and current.value.decode() == self.instance_id
        self._leading_with = lease if self.leadership.held else None

    async def reap(self, survey: Survey) -> None:
        dead = self._dead_instances(survey.mentioned - set(survey.live) - {self.instance_id})
        if not dead:
            return
        pacer = Pacer()
        for model_id, rec in records(self.registry.models):
            if (set(rec.instance_ids) | set(rec.failed_in)) & dead:
                await self.registry.update_model(model_id, lambda r: drop_instances(r, dead))
                pacer.resume()
            await pacer.step()
        logger.info("dropped the copies of departed instances %s", sorted(dead))

    def _dead_instances(self, missing: set[str]) -> frozenset[str]:
        now = time.monotonic()
        for iid in list(self._missing_since):
            if iid not in missing:
                del self._missing_since[iid]
        for iid in missing:
            self._missing_since.setdefault(iid, now)
        grace = self.policy.reap_grace_s
        return frozenset(i for i in missing if now - self._missing_since[i] >= grace)

    def ensure_min_copies(self, survey: Survey) -> None:
        serving_now = len(serving(survey.live))
        started = 0
        for model_id, have, min_copies in survey.under_copied:
            want = min(min_copies, serving_now)
            record = self.registry.models.get(model_id)
            if have < want and record is not None and model_id not in self._scaling:
                logger.info("model %s has %d of its %d minimum copies", model_id, have, want)
                self._add_copy(model_id, record)
                started += 1
                if started >= MIN_COPIES_PER_RUN:
                    return

    def load_proactively(self, survey: Survey) -> None:
        """Models used recently but loaded nowhere go into free space before a request has
        to wait for them."""
        size = bytes_to_units(self.router.local.info.default_model_size_bytes)
        # A cold instance's free space is not offered: placement would put the load on a
        # warm pod (the cold one is warming up: mmesh.router.warming) and evict there.
        roomy = {
            i: r for i, r in serving(survey.live).items() if r.free_units >= 2 * size and not r.cold
        }
        started = 0
        for _, model_id in sorted(survey.recent_unloaded, reverse=True):
            record = self.registry.models.get(model_id)
            if record is None or model_id in self._scaling:
                continue
            required = required_labels(record.model_type)
            if not any(satisfies(r.labels, required) for r in roomy.values()):
                continue  # free space only on pods of other runtimes: a load would evict
            logger.info("loading recently used model %s into free space", model_id)
            self._add_copy(model_id, record)
            started += 1
            if started >= min(PROACTIVE_PER_RUN, len(roomy)):
                return

    def publish_gauges(self, survey: Survey) -> None:
        self.metrics.cluster_models_managed.set(survey.managed)
        self.metrics.cluster_models_loaded.set(survey.loaded)
        self.metrics.cluster_models_failed.set(survey.failed)


@dataclass
class Survey:
    """What the leader learns from one pass over the registry."""

    live: dict[str, InstanceRecord]
    mentioned: set[str] = field(default_factory=set)
    under_copied: list[tuple[str, int, int]] = field(default_factory=list)
    recent_unloaded: list[tuple[int, str]] = field(default_factory=list)
    managed: int = 0
    loaded: int = 0
    failed: int = 0

    def note(
        self, model_id: str, rec: ModelRecord, *, now_ms: int, expiry_ms: int, cutoff_ms: int
    ) -> None:
        self.managed += 1
        self.mentioned.update(rec.instance_ids)
        self.mentioned.update(rec.failed_in)
        holders = sum(1 for iid in rec.instance_ids if iid in self.live)
        if any(iid in self.live for iid in rec.loaded_in):
            self.loaded += 1
        has_failures = bool(rec.failed_in) and bool(
            failed_instances(rec, now_ms=now_ms, expiry_ms=expiry_ms)
        )
        self.failed += has_failures
        if rec.min_copies > holders:
            self.under_copied.append((model_id, holders, rec.min_copies))
        if not holders and not has_failures and rec.last_used_ms >= cutoff_ms:
            self.recent_unloaded.append((rec.last_used_ms, model_id))


class GcFreezer:
    """Keeps long-lived objects (registry records, cache entries) out of the collector's
    generations: a full collection that traverses hundreds of thousands of them stalls
    every request for 100+ ms. Survivors are frozen every few seconds; once an hour everything
    is thawed so one full collection can reclaim cycles that died while frozen."""

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % GC_UNFREEZE_EVERY == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
