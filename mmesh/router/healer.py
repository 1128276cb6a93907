"""Keeps the registry true to what this pod really holds (decisions in repair.py).

- Start-up: a router that comes back under the same instance id (a restarted container)
  finds the claims of its previous life. Before it reports ready it asks the runtime about
  each: a copy the runtime still holds is adopted into the cache, every other claim is
  dropped (compare-and-swap).
- Every `interval_s`: the cache and the registry are compared both ways (stale claims,
  missing claims, copies still marked loading, expired failures of this instance). Every
  `probe_interval_s` a few loaded copies are checked with the model server's ModelReady;
  if one is gone, all are checked.
- Runtime loss: when the runtime answers NOT_FOUND for a copy this router holds (or the
  check above finds one gone), every loaded copy is checked at once and all that are gone
  are dropped from the cache and the registry in one step; the next request reloads.
- First contact: `drop_peer_claim` removes a peer's claim the peer disowned.

Each repair counts in `modelmesh_registry_repairs_total{kind}`. Nothing here runs on the
request path of a loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from mmesh.core.clock import now_ms
from mmesh.core.errors import StoreUnavailable
from mmesh.core.ids import InstanceId
from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.records import ModelRecord, Table, VModelRecord
from mmesh.router.cluster import records
from mmesh.router.errors import ModelNotHere, NoCapacity, Passthrough, RouterError
from mmesh.router.forwarding import Forwarder
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.pacing import Pacer
from mmesh.router.registry import UNCHANGED, Registry, Unchanged
from mmesh.router.repair import (
    Repair,
    RepairKind,
    apply_repair,
    claim_repairs,
    drop_peer_claim,
    unregistered_copies,
    wants_first_load,
)

logger = logging.getLogger(__name__)

MODEL_READY = "/inference.GRPCInferenceService/ModelReady"
PROBE_TIMEOUT_S = 2.0
PROBE_SAMPLE = 8
"""Loaded copies checked each round; one missing triggers a check of all."""
PROBE_PARALLEL = 8
NO_CAPACITY_RETRY_S = 15.0
NO_CAPACITY_RETRY_MAX_S = 600.0
"""A first load refused for room (or for want of a pod) is tried again after 15 s, then
after twice as long each time, up to 10 minutes."""
RECONCILE_CHUNK = 64
"""Registry records judged in one piece of the paced pass (mmesh.router.pacing): a registry of
20,000 models is planned in many short steps, never in one stall of the requests in flight."""


def _or_unchanged(record: ModelRecord | None) -> ModelRecord | Unchanged:
    return UNCHANGED if record is None else record


class Healer:
    def __init__(
        self,
        *,
        registry: Registry,
        local: LocalModels,
        forwarder: Forwarder,
        metrics: RouterMetrics,
        failure_expiry_ms: int,
        interval_s: float,
        probe_interval_s: float = 5.0,
        on_runtime_lost: Callable[[Sequence[str]], None] = lambda lost: None,
    ) -> None:
        """`on_runtime_lost`: called with the copies the runtime turns out to have lost (it
        restarted; its model server may be cold again), the most recently used first."""
        self.registry = registry
        self.local = local
        self.forwarder = forwarder
        self.metrics = metrics
        self.failure_expiry_ms = failure_expiry_ms
        self.interval_s = interval_s
        self.probe_interval_s = min(probe_interval_s, interval_s)
        self.on_runtime_lost = on_runtime_lost
        self._check: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def me(self) -> str:
        return self.local.instance_id

    def count(self, kind: RepairKind, n: int = 1) -> None:
        if n:
            self.metrics.registry_repairs.labels(kind.value).inc(n)

    # --- start-up --------------------------------------------------------------------

    async def startup(self) -> list[str]:
        """Settle the claims of this instance id's previous life before serving; the copies
        that life held and this one lost, the most recently loaded first."""
        me = InstanceId(self.me)
        claimed = sorted(
            (
                (rec.instance_ids[me], model_id)
                for model_id, rec in records(self.registry.models)
                if me in rec.instance_ids
            ),
            reverse=True,
        )
        if not claimed:
            return []
        adopted, lost = 0, []
        for _, model_id in claimed:
            record = self.registry.models.get(model_id)
            if record is None:
                continue
            size = await self.local.runtime.model_size(model_id)
            if size is not None and self.local.adopt(model_id, size):
                await self._apply(model_id, RepairKind.ADOPTED)
                adopted += 1
            else:
                if size is not None:  # held by the runtime but no room in the cache
                    with contextlib.suppress(RouterError):
                        await self.local.runtime.unload(model_id, timeout_s=PROBE_TIMEOUT_S)
                await self._apply(model_id, RepairKind.STARTUP_CLAIM)
                lost.append(model_id)
        self.local.changed()
        logger.info(
            "start-up: %d copy claims of %s found in the registry; the runtime still held "
            "%d (adopted), %d dropped",
            len(claimed),
            self.me,
            adopted,
            len(lost),
        )
        return lost

    # --- periodic --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe_sample()
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + self.interval_s
                    await self.reconcile()
            except StoreUnavailable as exc:
                logger.warning("registry reconcile skipped a round: %s", exc)
            except Exception:
                logger.exception("registry reconcile failed")

    async def reconcile(self) -> list[Repair]:
        """One round of the registry against the cache, both ways."""
        stamp, table = now_ms(), self.registry.models.items
        repairs: list[Repair] = []
        pacer = Pacer()
        for part in _parts(list(table)):
            pairs = [(m, held.record) for m in part if (held := table.get(m)) is not None]
            local = {m: self.local.copy_state(m) for m in part}
            repairs += claim_repairs(
                self.me, pairs, local, now_ms=stamp, failure_expiry_ms=self.failure_expiry_ms
            )
            await pacer.step()
        for part in _parts(self.local.cache.ids()):
            repairs += unregistered_copies({m: self.local.copy_state(m) for m in part}, table)
            await pacer.step()
        for repair in repairs:
            if repair.kind is RepairKind.UNREGISTERED_COPY:
                if self.registry.models.get(repair.model_id) is None:
                    self.local.forget(repair.model_id)
                    self.count(repair.kind)
                continue
            await self._apply(repair.model_id, repair.kind)
        if repairs:
            logger.info(
                "reconcile of %s: %s",
                self.me,
                ", ".join(f"{r.kind.value} {r.model_id}" for r in repairs),
            )
        return repairs

    async def _apply(self, model_id: str, kind: RepairKind) -> bool:
        """One repair in one compare-and-swap, judged again on the current record and the
        current local state; True if it wrote."""
        wrote = False

        def change(rec: ModelRecord | None) -> ModelRecord | Unchanged:
            nonlocal wrote
            fixed = apply_repair(
                kind,
                rec,
                self.me,
                self.local.copy_state(model_id),
                now_ms=now_ms(),
                failure_expiry_ms=self.failure_expiry_ms,
            )
            wrote = fixed is not None
            return _or_unchanged(fixed)

        await self.registry.update_model(model_id, change)
        if wrote:
            self.count(kind)
        return wrote

    # --- request path repairs ----------------------------------------------------------

    async def drop_own_stale_claim(self, model_id: str) -> ModelRecord | None:
        """The registry claims a copy here that this router does not hold: drop it (cold
        path only); the record after."""
        try:
            await self._apply(model_id, RepairKind.STALE_CLAIM)
        except StoreUnavailable as exc:
            logger.warning("could not drop the stale claim on %s here: %s", model_id, exc)
        return self.registry.models.get(model_id)

    async def drop_peer_claim(self, model_id: str, instance_id: str, seen_ms: int) -> None:
        """`instance_id` answered that it holds no copy it was claimed to hold."""
        wrote = False

        def change(rec: ModelRecord | None) -> ModelRecord | Unchanged:
            nonlocal wrote
            fixed = drop_peer_claim(rec, instance_id, seen_ms, now_ms=now_ms())
            wrote = fixed is not None
            return _or_unchanged(fixed)

        try:
            await self.registry.update_model(model_id, change)
        except StoreUnavailable as exc:
            logger.warning(
                "could not drop the stale claim of %s on %s: %s", instance_id, model_id, exc
            )
        if wrote:
            self.count(RepairKind.PEER_STALE_CLAIM)
            logger.info("dropped the stale claim of %s on a copy of %s", instance_id, model_id)

    # --- runtime loss --------------------------------------------------------------------

    async def runtime_lost(self, model_id: str) -> int:
        """The runtime answered NOT_FOUND for `model_id`, which this router holds: check
        every loaded copy (once, however many requests saw it) and drop all that are gone;
        how many were dropped."""
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._check_all(known_lost=model_id))
        return await asyncio.shield(self._check)

    async def _probe_sample(self) -> None:
        sample = self.local.newest_loaded(PROBE_SAMPLE)
        if not sample:
            return
        gone = await self._gone(sample)
        if gone:
            await self.runtime_lost(gone[0])

    async def _check_all(self, *, known_lost: str) -> int:
        loaded = self.local.newest_loaded()
        others = [m for m in loaded if m != known_lost]
        gone = [known_lost, *await self._gone(others)]
        dropped = [m for m in gone if self._lose(m)]
        if not dropped:
            return 0
        logger.warning(
            "runtime of %s lost %d of its %d loaded models (%s); dropping them from the "
            "cache and the registry",
            self.me,
            len(dropped),
            len(loaded),
            ", ".join(dropped[:10]) + (", ..." if len(dropped) > 10 else ""),
        )
        self.local.changed()
        self.on_runtime_lost(dropped)
        results = await asyncio.gather(
            *(self._apply(m, RepairKind.RUNTIME_LOST) for m in dropped), return_exceptions=True
        )
        for model_id, result in zip(dropped, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("could not drop the lost copy of %s: %s", model_id, result)
        return len(dropped)

    def _lose(self, model_id: str) -> bool:
        return self.local.lose(model_id)

    async def _gone(self, model_ids: list[str]) -> list[str]:
        """Those of `model_ids` the model server says it does not have (NOT_FOUND or not
        ready); a server that cannot say (down, no ModelReady) loses nothing here."""
        limit = asyncio.Semaphore(PROBE_PARALLEL)

        async def probe(model_id: str) -> bool:
            async with limit:
                return await self._is_gone(model_id)

        results = await asyncio.gather(*(probe(m) for m in model_ids))
        return [m for m, gone in zip(model_ids, results, strict=True) if gone]

    async def _is_gone(self, model_id: str) -> bool:
        request = v2.ModelReadyRequest(name=model_id).SerializeToString()
        try:
            raw = await self.forwarder.call(MODEL_READY, request, (), PROBE_TIMEOUT_S)
        except RouterError as exc:
            return says_unknown_model(exc) and self.local.is_loaded(model_id)
        return not v2.ModelReadyResponse.FromString(raw).ready and self.local.is_loaded(model_id)


def says_unknown_model(exc: RouterError) -> bool:
    """Whether a model server's error to ModelReady means it does not have the model:
    NOT_FOUND, or MLServer's way (1.x answers UNKNOWN "Unexpected <class
    'mlserver.errors.ModelNotFound'>: Model ... not found"). Anything else (down, slow,
    no ModelReady) says nothing either way."""
    if isinstance(exc, ModelNotHere):
        return True
    return isinstance(exc, Passthrough) and "ModelNotFound" in str(exc)


class FirstLoads:
    """Leader duty: load the model of a new InferenceService (a vmodel's active or target
    model) at once, without waiting for a request, as the reference's `loadNow` does; and
    again once its load failures expire. Driven by registry changes and by each survey."""

    def __init__(
        self,
        *,
        registry: Registry,
        place: Callable[[str, ModelRecord], Awaitable[object]],
        is_leader: Callable[[], bool],
        live: Callable[[], set[str]],
        failure_expiry_ms: int,
        max_parallel: int = 4,
    ) -> None:
        self.registry = registry
        self._place = place
        self._is_leader = is_leader
        self._live = live
        self.failure_expiry_ms = failure_expiry_ms
        self._limit = asyncio.Semaphore(max_parallel)
        self._placing: set[str] = set()
        self._instances: set[str] = set(registry.instances.items)
        self._waiting: dict[str, tuple[float, float]] = {}
        """Model -> (monotonic time of its next try, back-off) after a NoCapacity refusal."""
        self._tasks: set[asyncio.Task[None]] = set()

    def on_change(self, table: Table, ident: str) -> None:
        """Registry listener: a vmodel appeared or moved, or a model record changed; a new
        instance ends every back-off (it may be the first pod of a model's runtime)."""
        if table is Table.INSTANCES:
            if ident not in self._instances and self.registry.instances.get(ident) is not None:
                self._instances.add(ident)
                self._waiting.clear()
                self.sweep()
            return
        if not self._is_leader():
            return
        if table is Table.VMODELS:
            vmodel = self.registry.vmodels.get(ident)
            if vmodel is not None:
                self._consider_vmodel(vmodel)
        elif table is Table.REGISTRY:
            self._consider(ident, check_served=True)

    def sweep(self) -> None:
        """Every vmodel's models, once per leader survey."""
        if not self._is_leader():
            return
        for versioned in list(self.registry.vmodels.items.values()):
            self._consider_vmodel(versioned.record)

    def _consider_vmodel(self, vmodel: VModelRecord) -> None:
        for model_id in self._wanted(vmodel):
            self._consider(model_id)

    def _wanted(self, vmodel: VModelRecord) -> tuple[str, ...]:
        """Its active model; and its target while the active one has no copy (with one,
        the management API's transition loads the target)."""
        active = self.registry.models.get(vmodel.active_model)
        if vmodel.in_transition and (active is None or not active.instance_ids):
            return (vmodel.active_model, vmodel.target_model)
        return (vmodel.active_model,)

    def _is_served(self, model_id: str) -> bool:
        return any(model_id in self._wanted(v.record) for v in self.registry.vmodels.items.values())

    def _consider(self, model_id: str, *, check_served: bool = False) -> None:
        record = self.registry.models.get(model_id)
        if record is None or model_id in self._placing:
            return
        waiting = self._waiting.get(model_id)
        if waiting is not None and time.monotonic() < waiting[0]:
            return
        if not wants_first_load(
            record, self._live(), now_ms=now_ms(), failure_expiry_ms=self.failure_expiry_ms
        ):
            return
        if check_served and not self._is_served(model_id):
            return
        self._placing.add(model_id)
        task = asyncio.ensure_future(self._load(model_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model_id: str) -> None:
        try:
            async with self._limit:
                record = self.registry.models.get(model_id)
                if record is None:
                    return
                logger.info("loading %s, new and loaded nowhere, ahead of any request", model_id)
                await self._place(model_id, record)
                self._waiting.pop(model_id, None)
        except NoCapacity as exc:  # no pod of its runtime yet, or all full: try later
            _, backoff = self._waiting.get(model_id, (0.0, NO_CAPACITY_RETRY_S / 2))
            backoff = min(2 * backoff, NO_CAPACITY_RETRY_MAX_S)
            self._waiting[model_id] = (time.monotonic() + backoff, backoff)
            logger.info("first load of %s waits %.0f s: %s", model_id, backoff, exc)
        except RouterError as exc:
            logger.warning("first load of %s failed: %s", model_id, exc)
        except StoreUnavailable as exc:
            logger.warning("first load of %s waits for etcd: %s", model_id, exc)
        except Exception:
            logger.exception("first load of %s failed", model_id)
        finally:
            self._placing.discard(model_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _parts(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), RECONCILE_CHUNK):
        yield ids[start : start + RECONCILE_CHUNK]
