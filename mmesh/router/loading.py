"""This pod's copies: the cache's eviction decisions plus the I/O that loads and unloads models.

Concurrent requests for a model that is not loaded share one load. A load claims its copy
in the registry (one CAS), waits for a loading slot (the runtime's maxLoadingConcurrency),
makes room in the cache (waiting, up to the load timeout, while only models too young to
evict stand in the way), loads with the runtime's timeout, then records the copy as loaded
(a second CAS). Models the cache evicts to make room are unloaded in the background; their
space stays taken until the runtime confirms the unload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import replace
from typing import Any

from mmesh.core.clock import now_ms
from mmesh.core.errors import StoreUnavailable
from mmesh.core.failures import is_live
from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.records import ModelRecord, bytes_to_units, units_to_bytes
from mmesh.router.cache import (
    Admission,
    CacheEntry,
    EntryState,
    EvictionPolicy,
    LocalCache,
    Refusal,
)
from mmesh.router.errors import (
    LoadFailed,
    ModelNotHere,
    NoCapacity,
    RegistryUnavailable,
    RequestTimeout,
    RouterError,
    RuntimeUnavailable,
)
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import UNCHANGED, Registry, Unchanged
from mmesh.router.routing import LocalCopy
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo

logger = logging.getLogger(__name__)

UNLOAD_ATTEMPTS = 3
UNLOAD_RETRY_S = 1.0
ROOM_POLL_S = 0.05
"""How often a load waiting for room tries again."""
WAIT_FOR_ROOM = frozenset({Refusal.CHURN, Refusal.UNLOADING, Refusal.BUSY})
"""Refusals that time can lift (as opposed to a model bigger than the whole cache)."""
RECORD_RETRY_S = 1.0
"""While etcd is away: how often copies loaded meanwhile try again to get recorded."""


class LocalModels:
    def __init__(
        self,
        *,
        instance_id: str,
        cache: LocalCache,
        runtime: RuntimeClient,
        info: RuntimeInfo,
        registry: Registry,
        metrics: RouterMetrics,
        policy: EvictionPolicy,
        failure_expiry_ms: int,
        is_live: Callable[[str], bool],
        on_change: Callable[[], None],
    ) -> None:
        self.instance_id = InstanceId(instance_id)
        self.cache = cache
        self.runtime = runtime
        self.info = info
        self.registry = registry
        self.metrics = metrics
        self.policy = policy
        self.failure_expiry_ms = failure_expiry_ms
        self._on_change = on_change
        self.is_live = is_live
        self._loads: dict[str, asyncio.Future[None]] = {}
        self._failures: dict[str, tuple[int, str]] = {}
        self._slots = asyncio.Semaphore(info.loading_concurrency)
        self._background: set[asyncio.Task[None]] = set()
        self._unloads: dict[str, asyncio.Task[None]] = {}
        self._serving: Counter[str] = Counter()
        self._drained: dict[str, asyncio.Event] = {}
        self.recording: dict[str, asyncio.Task[None]] = {}
        """Copies just loaded whose record (Loaded) is being written; see `recorded`."""
        self._unrecorded: set[str] = set()
        """Copies loaded while etcd was away, not in the registry yet."""
        self._recorder: asyncio.Task[None] | None = None
        self.cold = False
        """The model server may not have finished a load since it started (see
        mmesh.router.warming); the first load that ends here clears it."""
        self.on_unreachable: Callable[[], None] = lambda: None
        """Called when the runtime does not answer a load (wired to the `Warmer`)."""

    def warmed(self) -> None:
        """The model server is warm (or counts as warm): placement may send loads here."""
        if self.cold:
            self.cold = False
            self.changed()

    def changed(self) -> None:
        """The cache or the loads in progress changed: refresh the gauges, then tell the
        publisher of the instance record (`on_change`), which reads both."""
        self._update_gauges()
        self._on_change()

    def _update_gauges(self) -> None:
        cache, metrics = self.cache, self.metrics
        capacity = self.capacity_bytes()
        used = units_to_bytes(cache.used_units)
        metrics.capacity_bytes.set(capacity)
        metrics.used_bytes.set(used)
        metrics.used_bps.set(used * 10000 // capacity if capacity else 0)
        metrics.models_total.set(cache.count)
        lru = cache.lru_time_ms()
        if lru is not None:
            metrics.instance_lru_s.set(lru / 1000)
            metrics.instance_lru_age_s.set(max(0, now_ms() - lru) / 1000)

    # --- queries ---------------------------------------------------------------------

    def is_loaded(self, model_id: str) -> bool:
        return self.cache.state_of(ModelId(model_id)) is EntryState.LOADED

    def has_copy(self, model_id: str) -> bool:
        """Loaded or loading here."""
        return self.cache.state_of(ModelId(model_id)) in (EntryState.LOADED, EntryState.LOADING)

    def is_unloading(self, model_id: str) -> bool:
        """This instance's copy is being unloaded (the registry may still list it)."""
        return model_id in self._unloads

    def is_loading(self, model_id: str) -> bool:
        return model_id in self._loads

    def loading_count(self) -> int:
        return len(self._loads)

    def copy_state(self, model_id: str) -> LocalCopy:
        """This pod's copy of the model, as routing and repairs see it."""
        state = self.cache.state_of(ModelId(model_id))
        if state is EntryState.LOADED:
            return LocalCopy.LOADED
        if model_id in self._loads or state is EntryState.LOADING:
            return LocalCopy.LOADING
        if model_id in self._unloads or state is EntryState.UNLOADING:
            return LocalCopy.UNLOADING
        return LocalCopy.NONE

    def newest_loaded(self, limit: int | None = None) -> list[str]:
        """Loaded models, most recently used first (up to `limit`)."""
        return list(self.cache.newest(EntryState.LOADED, limit))

    def touch(self, model_id: str) -> None:
        if self.cache.touch(ModelId(model_id), now_ms()) is None and model_id in self._loads:
            self.cache.note_use(ModelId(model_id), now_ms())  # queued for a loading slot

    def note_forwarded(self, model_id: str) -> None:
        """A request for the model went to a peer: its frequency counts here too."""
        self.cache.note_use(ModelId(model_id), now_ms())

    def in_use(self, model_id: str) -> _Serving:
        """Counts a request the local runtime is serving, so a retiring copy drains first."""
        return _Serving(self, model_id)

    def _serving_started(self, model_id: str) -> None:
        self._serving[model_id] += 1

    def _serving_ended(self, model_id: str) -> None:
        self._serving[model_id] -= 1
        if not self._serving[model_id]:
            del self._serving[model_id]
            if model_id in self._drained:
                self._drained[model_id].set()

    # --- loading ---------------------------------------------------------------------

    async def ensure_loaded(
        self,
        model_id: str,
        record: ModelRecord,
        *,
        extra: bool = False,
        unreachable: Collection[str] = (),
        until_recorded: bool = True,
    ) -> None:
        """Return once the model can serve here; loads it (once) if it is not loaded.

        A first copy is refused (ModelNotHere) when another live instance already holds or
        loads one, so two routers that both miss never load the same model twice; `extra`
        asks for an additional copy on purpose (scale-up, migration, minimum copies).
        Copies on `unreachable` instances (a request failed there) do not count.
        Without `until_recorded` it returns before the registry shows the new copy as
        loaded: the caller serves meanwhile and awaits `recorded` before it answers."""
        if self.is_loaded(model_id):
            if until_recorded and self.recording:
                await self.recorded(model_id)
            return
        future = self._loads.get(model_id)
        if future is None:
            self._raise_recent_failure(model_id)
            future = asyncio.get_running_loop().create_future()
            # Mark the outcome retrieved even if every waiter was cancelled.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._loads[model_id] = future
            skip = frozenset(unreachable)
            self._spawn(self._load(model_id, record, future, extra=extra, unreachable=skip))
            self.changed()  # peers place by loads in progress: publish the new one
        await asyncio.shield(future)
        if until_recorded:
            await self.recorded(model_id)

    async def recorded(self, model_id: str) -> None:
        """Return once a copy loaded just now is in the registry (at once when none is
        being recorded): any router asked after an answer from the new copy reports it."""
        recording = self.recording.get(model_id)
        if recording is not None:
            await asyncio.shield(recording)

    def _raise_recent_failure(self, model_id: str) -> None:
        failed = self._failures.get(model_id)
        if failed is None:
            return
        failed_ms, message = failed
        if is_live(failed_ms, now_ms=now_ms(), expiry_ms=self.failure_expiry_ms):
            raise LoadFailed(f"model {model_id} failed to load: {message}")
        del self._failures[model_id]

    async def _load(
        self,
        model_id: str,
        record: ModelRecord,
        future: asyncio.Future[None],
        *,
        extra: bool,
        unreachable: frozenset[str],
    ) -> None:
        started = time.monotonic()
        try:
            await self._load_steps(model_id, record, extra=extra, unreachable=unreachable)
        except (NoCapacity, ModelNotHere) as exc:
            logger.warning("%s", exc)
            future.set_exception(exc)
        except StoreUnavailable as exc:
            # etcd is away (the claim could not be written, so nothing is in the cache yet):
            # nothing is wrong with the model, so no failure is remembered; one would
            # refuse the model here for the whole failure expiry.
            message = f"cannot load {model_id}: the registry (etcd) is unavailable: {exc}"
            logger.warning("%s", message)
            future.set_exception(RegistryUnavailable(message))
        except RuntimeUnavailable as exc:
            # The adapter or model server did not answer (restarting, connection refused):
            # the runtime never judged the model, so no failure is remembered and the claim
            # goes; the request tries another instance or waits for the runtime to return.
            await self._abandon(model_id)
            logger.warning("load of %s abandoned, the runtime is unreachable: %s", model_id, exc)
            self.on_unreachable()
            future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - task top level: every failure is recorded
            error = exc if isinstance(exc, RouterError) else LoadFailed(str(exc))
            self.cold = False  # the runtime judged the model: its first load is behind it
            await self._record_failure(model_id, str(error))
            future.set_exception(error)
        else:
            self.cold = False
            self.metrics.load_ms.observe((time.monotonic() - started) * 1000)
            future.set_result(None)
        finally:
            self._loads.pop(model_id, None)
            self.changed()

    async def _load_steps(
        self, model_id: str, record: ModelRecord, *, extra: bool, unreachable: frozenset[str]
    ) -> None:
        # The runtime sizes the model while the claim is written: a cold request waits for
        # the slower of the two, not both.
        sizing = asyncio.ensure_future(self._predicted_size(model_id, record))
        try:
            unloading = self._unloads.get(model_id)
            if unloading is not None:
                await asyncio.shield(unloading)
            claimed = await self._claim(model_id, extra=extra, unreachable=unreachable)
        except BaseException:
            sizing.cancel()
            raise
        units = bytes_to_units(await sizing)
        queued = time.monotonic()
        async with self._slots:
            self.metrics.loading_queue_ms.observe((time.monotonic() - queued) * 1000)
            # Room is made when the load starts, not when it queues: the models it evicts
            # keep serving while it waits for a loading slot.
            admission = await self._admit(model_id, units)
            if admission.refusal is not None:
                if claimed:
                    await self._unclaim(model_id)
                raise NoCapacity(f"cannot load {model_id} here: {admission.detail}")
            self._unload_victims(admission.victims)
            load_started = time.monotonic()
            size = await self._runtime_load(model_id, record)
            load_ms = (time.monotonic() - load_started) * 1000
        self._unload_victims(
            self.cache.loaded(ModelId(model_id), bytes_to_units(size), now_ms(), load_ms=load_ms)
        )
        self.metrics.loaded_size.observe(size)
        self._failures.pop(model_id, None)
        # The waiting requests go ahead while the copy is recorded; each awaits the record
        # before it answers (`recorded`), so the first request pays for the slower of its
        # runtime call and the etcd write, not both.
        recording = self._spawn(self._record_loaded(model_id))
        self.recording[model_id] = recording
        recording.add_done_callback(functools.partial(self._recorded, model_id))

    def _recorded(self, model_id: str, recording: asyncio.Task[None]) -> None:
        if self.recording.get(model_id) is recording:
            del self.recording[model_id]

    async def _admit(self, model_id: str, units: int) -> Admission:
        """Make room for the model; while only models too young to evict (or unloads under
        way) stand in the way, wait for them, up to the load timeout: a queue absorbs bursts
        of churn, and only loads that cannot start within the timeout are refused."""
        deadline = time.monotonic() + self.info.load_timeout_ms / 1000
        while True:
            stamp = now_ms()
            admission = self.cache.admit(
                ModelId(model_id), units, last_used_ms=stamp, now_ms=stamp, policy=self.policy
            )
            if admission.refusal not in WAIT_FOR_ROOM or time.monotonic() >= deadline:
                break
            await asyncio.sleep(ROOM_POLL_S)
        if admission.refusal is Refusal.CHURN:
            return replace(
                admission,
                detail=(
                    f"{admission.detail}; no room within the load timeout "
                    f"({self.info.load_timeout_ms} ms): loads arrive faster than the cache "
                    f"can turn over. Add capacity or instances, or lower MM_MIN_CHURN_AGE_MS"
                ),
            )
        return admission

    async def _record_loaded(self, model_id: str) -> None:
        try:
            await self._settle_record(model_id)
        except StoreUnavailable as exc:
            logger.warning(
                "could not record the copy of %s as loaded (trying again every %.0f s): %s",
                model_id, RECORD_RETRY_S, exc,
            )  # fmt: skip
            self._record_later(model_id)
        except Exception:  # a background task: nobody else would see it
            logger.exception("could not record the copy of %s as loaded", model_id)

    async def _settle_record(self, model_id: str) -> None:
        """Record the loaded copy; unload it if the model was unregistered meanwhile."""
        if await self._mark_loaded(model_id) is None:
            logger.info("model %s was unregistered while it loaded; unloading", model_id)
            self.evict(model_id)

    def _record_later(self, model_id: str) -> None:
        """Keep trying to record a loaded copy until etcd answers (or the copy goes). Not
        a background load task: shutdown's drain must not wait for etcd."""
        self._unrecorded.add(model_id)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.ensure_future(self._record_unrecorded())

    async def _record_unrecorded(self) -> None:
        while self._unrecorded:
            await asyncio.sleep(RECORD_RETRY_S)
            for model_id in sorted(self._unrecorded):
                if self.is_loaded(model_id):
                    try:
                        await self._settle_record(model_id)
                    except StoreUnavailable:
                        break  # still away: the next round tries them all again
                    except Exception:
                        logger.exception("could not record the copy of %s as loaded", model_id)
                        continue
                    logger.info("etcd answers: the copy of %s is settled", model_id)
                self._unrecorded.discard(model_id)

    async def _predicted_size(self, model_id: str, record: ModelRecord) -> int:
        started = time.monotonic()
        size = await self.runtime.predict_size(
            model_id, record.model_type, record.model_path, record.encoded_key or ""
        )
        self.metrics.sizing_ms.observe((time.monotonic() - started) * 1000)
        return size or self.info.default_model_size_bytes

    async def trial_load(self, trial_id: str, record: ModelRecord) -> None:
        """Load `record`'s model under `trial_id`, which nothing routes to, and unload it:
        the model server's first load is then behind it (mmesh.router.warming). The
        instance is warm afterwards, whatever the runtime made of the model, unless the
        runtime never saw the load (RuntimeUnavailable)."""
        timeout_s = self.info.load_timeout_ms / 1000
        key = record.encoded_key or ""
        started = time.monotonic()
        async with self._slots:
            try:
                await self.runtime.load(
                    trial_id, record.model_type, record.model_path, key, timeout_s=timeout_s
                )
            except RuntimeUnavailable:
                raise
            except RouterError as exc:
                logger.info("warm-up load failed (the model server is warm all the same): %s", exc)
            finally:
                with contextlib.suppress(RouterError):
                    await self.runtime.unload(trial_id, timeout_s=timeout_s)
        logger.info(
            "model server warmed by a trial load in %.0f ms", (time.monotonic() - started) * 1000
        )
        self.warmed()

    async def _runtime_load(self, model_id: str, record: ModelRecord) -> int:
        timeout_s = self.info.load_timeout_ms / 1000
        try:
            size = await self.runtime.load(
                model_id,
                record.model_type,
                record.model_path,
                record.encoded_key or "",
                timeout_s=timeout_s,
            )
        except RequestTimeout as exc:
            self._spawn(self._unload_after_timeout(model_id))
            raise LoadFailed(
                f"load of {model_id} timed out after {self.info.load_timeout_ms} ms"
            ) from exc
        if size == 0:
            size = await self.runtime.model_size(model_id) or self.info.default_model_size_bytes
        return size

    async def _claim(self, model_id: str, *, extra: bool, unreachable: frozenset[str]) -> bool:
        """Record this copy as loading: the one etcd transaction that settles a race.

        True once recorded. False when etcd is away and the mirrored record allows the
        claim: the load goes ahead unrecorded, since answering beats failing every cold
        request for the length of the outage, and the copy is recorded once etcd answers
        (`_record_later`). Two routers may both load the model meanwhile; scale-down
        removes the copy that is not needed afterwards."""
        stamp, iid = now_ms(), self.instance_id

        def claim(rec: ModelRecord | None) -> ModelRecord | Unchanged:
            if rec is None:
                raise LoadFailed(f"model {model_id} is no longer registered")
            holders = sorted(
                i for i in rec.instance_ids if i != iid and i not in unreachable and self.is_live(i)
            )
            if holders and not extra:
                raise ModelNotHere(f"model {model_id} already has a copy on {holders[0]}")
            return rec.without_failure(iid).with_copy_loading(iid, stamp)

        try:
            await self.registry.update_model(model_id, claim)
        except StoreUnavailable as exc:
            claim(self.registry.models.get(model_id))  # refuses as the write would have
            logger.warning(
                "etcd is unavailable (%s): loading %s without recording it; it is recorded "
                "once etcd answers", exc, model_id,
            )  # fmt: skip
            return False
        return True

    async def _abandon(self, model_id: str) -> None:
        """Undo a load the runtime never answered for: free its cache space, drop the claim."""
        entry = self.cache.get(ModelId(model_id))
        if entry is not None and entry.state is EntryState.LOADING:
            self.cache.unloaded(ModelId(model_id))
        try:
            await self._unclaim(model_id)
        except StoreUnavailable as exc:
            logger.warning("could not drop the claim of %s: %s", model_id, exc)

    async def _unclaim(self, model_id: str) -> None:
        iid = self.instance_id
        await self.registry.update_model(
            model_id,
            lambda rec: (
                rec.without_copy(iid)
                if rec is not None and iid in rec.instance_ids and iid not in rec.loaded_in
                else UNCHANGED
            ),
        )

    async def _mark_loaded(self, model_id: str) -> ModelRecord | None:
        stamp, iid = now_ms(), self.instance_id
        return await self.registry.update_model(
            model_id, lambda rec: rec.with_copy_loaded(iid, stamp) if rec else UNCHANGED
        )

    async def _record_failure(self, model_id: str, message: str) -> None:
        self.metrics.load_failures.inc()
        stamp, iid = now_ms(), self.instance_id
        self._failures[model_id] = (stamp, message)
        entry = self.cache.get(ModelId(model_id))
        if entry is not None and entry.state is not EntryState.UNLOADING:
            self.cache.failed(ModelId(model_id), stamp)
        logger.warning("load of %s failed: %s", model_id, message)
        try:
            await self.registry.update_model(
                model_id,
                lambda rec: rec.with_copy_failed(iid, message, stamp) if rec else UNCHANGED,
            )
        except Exception:
            logger.exception("could not record the load failure of %s", model_id)

    # --- unloading -------------------------------------------------------------------

    def forget(self, model_id: str) -> None:
        """The model was unregistered: drop the local copy and its remembered load failure, so
        a model registered again under the same id (same spec, same hash) loads afresh."""
        self._failures.pop(model_id, None)
        self.evict(model_id)

    def evict(self, model_id: str) -> None:
        """Drop the local copy (unregistered model, stale copy, shutdown)."""
        entry = self.cache.get(ModelId(model_id))
        if entry is None or entry.state is EntryState.UNLOADING:
            return
        self.cache.remove(ModelId(model_id))
        self._start_unload(model_id, reason="removed", last_used_ms=entry.last_used_ms)

    async def retire(self, model_id: str, *, keep: int, gap_ms: int, drain_s: float) -> bool:
        """Scale-down of this instance's copy; False when the registry says no.

        The copy leaves the registry first (one CAS, which also checks that the model keeps
        max(1, `keep`) other live loaded copies and that no copy of it went within
        `gap_ms`), so new requests go to the remaining copies; requests already running on
        it finish (up to `drain_s`); then the runtime unloads it."""
        entry = self.cache.get(ModelId(model_id))
        if entry is None or entry.state is not EntryState.LOADED:
            return False
        iid, stamp, dropped = self.instance_id, now_ms(), False

        def drop(rec: ModelRecord | None) -> ModelRecord | Unchanged:
            nonlocal dropped
            if rec is None or iid not in rec.loaded_in:
                return UNCHANGED
            others = [i for i in rec.loaded_in if i != iid and self.is_live(i)]
            if len(others) < max(1, keep) or stamp - rec.last_unload_ms < gap_ms:
                return UNCHANGED
            dropped = True
            return _without_copy(rec, iid, stamp, entry.last_used_ms)

        await self.registry.update_model(model_id, drop)
        current = self.cache.get(ModelId(model_id))
        if not dropped or current is None or current.state is not EntryState.LOADED:
            return False
        self.cache.remove(ModelId(model_id))
        self._start_unload(
            model_id, reason="scaled down", last_used_ms=current.last_used_ms, drain_s=drain_s
        )
        return True

    def _unload_victims(self, victims: Iterable[CacheEntry]) -> None:
        stamp = now_ms()
        for victim in victims:
            idle_ms = max(0, stamp - victim.last_used_ms)
            self.metrics.evictions.inc()
            self.metrics.age_at_eviction_ms.observe(idle_ms)
            logger.info("evicting %s (idle %d ms) to make room", victim.model_id, idle_ms)
            self._start_unload(victim.model_id, reason="evicted", last_used_ms=victim.last_used_ms)

    def _start_unload(
        self, model_id: str, *, reason: str, last_used_ms: int, drain_s: float = 0.0
    ) -> None:
        task = asyncio.ensure_future(
            self._unload(model_id, reason=reason, last_used_ms=last_used_ms, drain_s=drain_s)
        )
        self._unloads[model_id] = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._unloads.pop(model_id, None))

    async def _unload(
        self, model_id: str, *, reason: str, last_used_ms: int, drain_s: float = 0.0
    ) -> None:
        if self._serving[model_id] and drain_s > 0:
            drained = self._drained.setdefault(model_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), drain_s)
            self._drained.pop(model_id, None)
        started = time.monotonic()
        for attempt in range(1, UNLOAD_ATTEMPTS + 1):
            try:
                await self.runtime.unload(model_id, timeout_s=self.info.load_timeout_ms / 1000)
                break
            except RouterError as exc:
                self.metrics.unload_attempt_failures.inc()
                logger.warning("unload %d of %s failed: %s", attempt, model_id, exc)
                await asyncio.sleep(UNLOAD_RETRY_S * attempt)
        else:
            self.metrics.unload_failures.inc()
        self.metrics.unload_ms.observe((time.monotonic() - started) * 1000)
        self.cache.unloaded(ModelId(model_id))
        self.changed()
        iid, stamp = self.instance_id, now_ms()
        try:
            await self.registry.update_model(
                model_id, lambda rec: _without_copy(rec, iid, stamp, last_used_ms)
            )
        except Exception:
            logger.exception(
                "could not drop the copy of %s (%s) from the registry", model_id, reason
            )

    def lose(self, model_id: str) -> bool:
        """The runtime no longer holds this loaded copy (it restarted): drop the entry now,
        freeing its space, and tell the runtime to unload it anyway, in case only the model
        server forgot it; a new load of the model waits for that. False if not loaded."""
        if not self.is_loaded(model_id):
            return False
        self.cache.unloaded(ModelId(model_id))
        task = asyncio.ensure_future(self._unload_after_timeout(model_id))
        self._unloads[model_id] = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._unloads.pop(model_id, None))
        return True

    def adopt(self, model_id: str, size_bytes: int) -> bool:
        """Take a copy the runtime already holds into the cache as LOADED (start-up, after
        the runtime confirmed it); False when the cache has no room for it."""
        units = bytes_to_units(size_bytes or self.info.default_model_size_bytes)
        if self.cache.free_units < units:
            return False
        stamp = now_ms()
        admission = self.cache.admit(
            ModelId(model_id), units, last_used_ms=stamp, now_ms=stamp, policy=self.policy
        )
        if admission.refusal is not None:
            return False
        self.cache.loaded(ModelId(model_id), units, stamp)
        return True

    async def _unload_after_timeout(self, model_id: str) -> None:
        """The runtime may still finish a load we gave up on: make sure it does not stay."""
        try:
            await self.runtime.unload(model_id, timeout_s=self.info.load_timeout_ms / 1000)
        except RouterError as exc:
            logger.warning("unload of timed-out %s failed: %s", model_id, exc)

    async def unload_all(self) -> None:
        """Shutting down: every claim leaves the registry first, so peers stop sending
        requests here while the runtime (stopping beside this router) unloads."""
        if self._recorder is not None:
            self._recorder.cancel()
        self._unrecorded.clear()
        entries = list(self.cache.entries())
        iid, stamp = self.instance_id, now_ms()
        for entry in entries:
            change = functools.partial(
                _without_copy, iid=iid, stamp=stamp, last_used_ms=entry.last_used_ms
            )
            with contextlib.suppress(StoreUnavailable):
                await self.registry.update_model(entry.model_id, change)
        for entry in entries:
            self.evict(entry.model_id)
        await self.drain()

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- reporting -------------------------------------------------------------------

    def capacity_bytes(self) -> int:
        return units_to_bytes(self.cache.capacity_units)


def _without_copy(
    rec: ModelRecord | None, iid: InstanceId, stamp: int, last_used_ms: int
) -> ModelRecord | Unchanged:
    """Drop this copy; the record keeps the model's last use (`lu`), which the registry
    learns here for free, in the same write, so the leader can reload it proactively."""
    if rec is None or iid not in rec.instance_ids:
        return UNCHANGED
    return replace(
        rec.without_copy(iid),
        last_used_ms=max(rec.last_used_ms, last_used_ms),
        last_unload_ms=stamp,
    )


class _Serving:
    """`LocalModels.in_use` (a class, not a generator: it runs on every warm request)."""

    __slots__ = ("_local", "_model_id")

    def __init__(self, local: LocalModels, model_id: str) -> None:
        self._local, self._model_id = local, model_id

    def __enter__(self) -> None:
        self._local._serving_started(self._model_id)

    def __exit__(self, *exc: object) -> None:
        self._local._serving_ended(self._model_id)
