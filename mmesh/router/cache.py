"""Pure: this pod's cache of models, in 8 KiB units (ModelMesh semantics).

`LocalCache` holds one entry per model this pod has loaded, is loading, failed
to load or is unloading, ordered by last use (reference §4.5). Entries weigh
their size in units; a failed entry weighs one unit. An entry being unloaded
still holds its units until `unloaded()` is called: its memory is not free yet.

Victims are chosen by one of two policies: LRU (no `Scoring`: the least recently
used first) or value (with a `Scoring`, see `mmesh.router.eviction`: the least
load time saved per unit of space first; a min-heap, lazily refreshed, finds
them). Entries the `protected` hook names (e.g. a model's minimum copies) are
never chosen.

Making room is "decide, then act": `admit()` and `loaded()` pick victims among
the LOADED entries and flip them to UNLOADING in the same call; the caller then
unloads them. A victim's units are promised to the
model it made room for, so later admissions do not count them twice; units of
models dropped with `remove()` are free only once they are unloaded.

`admit()` refuses, inserting nothing, when room can only be made by evicting
a model used within the churn age or loaded within `min_loaded_age_ms`
("cache churn"), or (LRU only) a model used more recently than the newcomer
(it would be evicted at once), or when the space is held by entries still
loading or unloading. Entries the `protected` predicate names (a model's
minimum copies) are never victims. The caller may wait and try again.
Callers: the router's loading and placement shells, which pass `now` in epoch ms.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mmesh.core.ids import ModelId
from mmesh.router.eviction import History, Scoring

FAILED_UNITS = 1
"""What a failed entry weighs (reference: failed entries weigh 1)."""

_NEVER = -(2**63)  # older than any timestamp
_ALWAYS = 2**63 - 1  # newer than any timestamp


class EntryState(enum.StrEnum):
    """Where a model is in its life in this pod."""

    LOADING = "LOADING"
    LOADED = "LOADED"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


class Refusal(enum.StrEnum):
    """Why `admit()` could not make room; the values are the messages."""

    TOO_BIG = "model is larger than the whole cache"
    CHURN = "cache churn"
    STALE = "model is older than every loaded model that could make room"
    UNLOADING = "capacity is taken up by models still unloading"
    BUSY = "capacity is taken up by models still loading or failed"
    PROTECTED = "capacity is taken up by models' minimum copies"


@dataclass(frozen=True, slots=True)
class EvictionPolicy:
    """How eagerly `admit()` may evict."""

    min_churn_age_ms: int
    """Models used less than this long ago are never evicted to make room."""
    min_loaded_age_ms: int = 0
    """Models loaded less than this long ago are never evicted to make room (their first
    requests may not have reached the runtime yet)."""

    def __post_init__(self) -> None:
        if self.min_churn_age_ms < 0:
            raise ValueError(f"min_churn_age_ms must not be negative: {self.min_churn_age_ms}")
        if self.min_loaded_age_ms < 0:
            raise ValueError(f"min_loaded_age_ms must not be negative: {self.min_loaded_age_ms}")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A snapshot of one cache entry."""

    model_id: ModelId
    units: int
    """Weight in 8 KiB units (FAILED_UNITS for a failed entry)."""
    last_used_ms: int
    state: EntryState
    state_since_ms: int
    """When the entry entered its state (placeholder, loaded, failed); epoch ms."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What `admit()` decided: victims to unload, or why nothing was admitted."""

    victims: tuple[CacheEntry, ...] = ()
    """Entries now UNLOADING to make room, oldest first; the caller unloads them."""
    refusal: Refusal | None = None
    detail: str = ""
    """The refusal with its numbers, for logs and error messages."""

    @property
    def admitted(self) -> bool:
        return self.refusal is None


class _Slot:
    """The mutable entry behind a `CacheEntry` snapshot."""

    __slots__ = (
        "claimed",
        "cost",
        "frequency",
        "heap_key",
        "last_used_ms",
        "model_id",
        "state",
        "state_since_ms",
        "units",
    )

    def __init__(self, model_id: ModelId, units: int, last_used_ms: int, now_ms: int) -> None:
        self.model_id = model_id
        self.units = units
        self.last_used_ms = last_used_ms
        self.state = EntryState.LOADING
        self.state_since_ms = now_ms
        self.claimed = False  # UNLOADING only: its units are promised to a newcomer
        # Value policy only: see mmesh.router.eviction. heap_key is the key of the slot's
        # newest heap entry (never above its value: uses only raise the value).
        self.frequency = float(last_used_ms)
        self.cost = 0.0
        self.heap_key = 0.0

    @property
    def value(self) -> float:
        return self.frequency + self.cost

    def snapshot(self) -> CacheEntry:
        return CacheEntry(
            self.model_id, self.units, self.last_used_ms, self.state, self.state_since_ms
        )


class LocalCache:
    """This pod's models; see the module docstring for the rules."""

    def __init__(
        self,
        capacity_units: int,
        *,
        scoring: Scoring | None = None,
        protected: Callable[[ModelId], bool] | None = None,
    ) -> None:
        if capacity_units < 0:
            raise ValueError(f"capacity_units must not be negative: {capacity_units}")
        self.capacity_units = capacity_units
        self.scoring = scoring
        self.protected: Callable[[ModelId], bool] = protected or _unprotected
        """Eviction skips entries this says True for (see `copies.is_min_copy`)."""
        self._history = History(scoring) if scoring is not None else None
        self._heap: list[tuple[float, int, _Slot]] = []
        self._seq = itertools.count()
        # Ordered by last_used_ms, oldest first; equal times keep insertion order.
        self._slots: OrderedDict[ModelId, _Slot] = OrderedDict()
        self._newest_ms = _NEVER  # >= every last_used_ms in _slots
        self._cached_units = 0  # LOADING + LOADED + FAILED
        self._unloading_units = 0
        self._claimed_units = 0  # the part of _unloading_units promised to newcomers
        self._counts = dict.fromkeys(EntryState, 0)

    # ------------------------------------------------------------ reading

    @property
    def used_units(self) -> int:
        """Units held by all entries, unloading ones included."""
        return self._cached_units + self._unloading_units

    @property
    def free_units(self) -> int:
        return max(0, self.capacity_units - self.used_units)

    @property
    def unloading_units(self) -> int:
        return self._unloading_units

    @property
    def count(self) -> int:
        """Models in the cache, not counting those being unloaded."""
        return len(self._slots) - self._counts[EntryState.UNLOADING]

    def get(self, model_id: ModelId) -> CacheEntry | None:
        slot = self._slots.get(model_id)
        return None if slot is None else slot.snapshot()

    def state_of(self, model_id: ModelId) -> EntryState | None:
        """The entry's state, None when absent (`get` without building a snapshot: the
        warm path asks this on every request)."""
        slot = self._slots.get(model_id)
        return None if slot is None else slot.state

    def entries(self) -> tuple[CacheEntry, ...]:
        """Every entry, least recently used first."""
        return tuple(slot.snapshot() for slot in self._slots.values())

    def ids(self) -> list[ModelId]:
        """Every model in the cache, least recently used first: a copy made at C speed, for
        passes that look at each entry in paced steps (`newest` reads every entry at once)."""
        return list(self._slots)

    def newest(self, state: EntryState, limit: int | None = None) -> list[ModelId]:
        """Up to `limit` models in `state`, most recently used first; a small `limit`
        stops after the newest entries instead of reading the whole cache."""
        found: list[ModelId] = []
        for model_id in reversed(self._slots):
            if limit is not None and len(found) >= limit:
                break
            if self._slots[model_id].state is state:
                found.append(model_id)
        return found

    def lru_time_ms(self) -> int | None:
        """Last use of the least recently used LOADED model; None when none is loaded."""
        for slot in self._slots.values():
            if slot.state is EntryState.LOADED:
                return slot.last_used_ms
        return None

    def victim_time_ms(self) -> int | None:
        """What the next victim is worth, as a time peers compare (the instance record's
        `lruTime`): its last use under LRU, its value (an equivalent last use) under the
        value policy. None when nothing is loaded."""
        if self.scoring is None:
            return self.lru_time_ms()
        top = self._heap_top()
        return None if top is None else int(top.value)

    def value_of(self, model_id: ModelId) -> float | None:
        """A model's value (value policy), None when absent or under LRU."""
        slot = self._slots.get(model_id)
        return None if slot is None or self.scoring is None else slot.value

    def used_since(self, since_ms: int) -> int:
        """LOADED models used after `since_ms` (for churn messages)."""
        return sum(
            1
            for s in self._slots.values()
            if s.state is EntryState.LOADED and s.last_used_ms > since_ms
        )

    def __repr__(self) -> str:
        counts = self._counts
        return (
            f"<LocalCache {counts[EntryState.LOADED]}/{len(self._slots)} loaded, "
            f"{self.used_units}/{self.capacity_units} units, "
            f"{counts[EntryState.LOADING]} loading, {counts[EntryState.FAILED]} failed, "
            f"{counts[EntryState.UNLOADING]} unloading>"
        )

    # ------------------------------------------------------------ the hot path

    def touch(self, model_id: ModelId, now_ms: int) -> EntryState | None:
        """Record a use of `model_id` at `now_ms`; its state, or None when absent."""
        slot = self._slots.get(model_id)
        if slot is None:
            return None
        if self.scoring is not None:
            slot.frequency = self.scoring.used(slot.frequency, now_ms)
        if now_ms >= self._newest_ms:
            slot.last_used_ms = self._newest_ms = now_ms
            self._slots.move_to_end(model_id)
        elif now_ms > slot.last_used_ms:  # an out-of-order clock: find its place
            del self._slots[model_id]
            slot.last_used_ms = now_ms
            self._insert(slot)
        return slot.state

    def note_use(self, model_id: ModelId, now_ms: int) -> None:
        """Record a use of a model this pod does not hold (a request it forwarded to a
        peer): value policy only, so that the model arrives here with its frequency if
        it is ever placed here."""
        if self._history is None:
            return
        if model_id in self._slots:
            self.touch(model_id, now_ms)
            return
        self._history.remember(model_id, self._history.resume(model_id, now_ms), now_ms)

    # ------------------------------------------------------------ transitions

    def admit(
        self,
        model_id: ModelId,
        units: int,
        *,
        last_used_ms: int,
        now_ms: int,
        policy: EvictionPolicy,
    ) -> Admission:
        """Insert a LOADING placeholder of `units`, evicting LRU models if needed.

        Only an absent or FAILED model can be admitted (a FAILED entry is
        replaced). Victims are LOADED models older than both the newcomer and
        the churn age, oldest first; when they cannot free enough room the
        admission is refused and the cache is left unchanged.
        """
        old = self._slots.get(model_id)
        if old is not None and old.state is not EntryState.FAILED:
            raise ValueError(f"model {model_id} is already in the cache ({old.state})")
        weight = max(units, 1)
        if weight > self.capacity_units:
            detail = f"{Refusal.TOO_BIG}: needs {weight} units, capacity {self.capacity_units}"
            return Admission(refusal=Refusal.TOO_BIG, detail=detail)
        need = weight - self._room() - (old.units if old else 0)
        churn_after = now_ms - policy.min_churn_age_ms
        loaded_after = now_ms - policy.min_loaded_age_ms
        victims, missing, stop = self._choose_victims(
            need, last_used_ms, churn_after, loaded_after=loaded_after
        )
        if missing > 0:
            return self._refuse(weight, missing, stop, now_ms=now_ms, policy=policy)
        frequency = float(last_used_ms)
        if old is not None:
            frequency = old.frequency
            self._pop(old)
        evicted = self._evict(victims, now_ms)
        slot = _Slot(model_id, weight, last_used_ms, now_ms)
        if self.scoring is not None and self._history is not None:
            slot.frequency = (
                self.scoring.used(frequency, last_used_ms)
                if old is not None
                else self._history.resume(model_id, last_used_ms)
            )
        self._account(slot, +1)
        self._insert(slot)
        return Admission(victims=evicted)

    def loaded(
        self, model_id: ModelId, units: int, now_ms: int, *, load_ms: float | None = None
    ) -> tuple[CacheEntry, ...]:
        """Mark a LOADING (or LOADED) model LOADED at its real size.

        `load_ms`, how long the load took, sets what the model is worth (value policy);
        unknown, the load is taken to cost REFERENCE_MS_PER_UNIT per unit. A bigger real
        size evicts other models regardless of the churn age: the memory is already
        taken. Returns those victims, now UNLOADING. A model removed while it loaded
        stays UNLOADING.
        """
        slot = self._require(model_id)
        if slot.state is EntryState.UNLOADING:
            return ()
        if slot.state is EntryState.FAILED:
            raise ValueError(f"model {model_id} failed; admit it again before loading")
        self._change(slot, EntryState.LOADED, max(units, 1), now_ms)
        if self.scoring is not None:
            if load_ms is not None:
                slot.cost = self.scoring.cost_term(load_ms, slot.units)
            self._push(slot)
        victims, _, _ = self._choose_victims(
            -self._room(), _ALWAYS, _ALWAYS, loaded_after=_ALWAYS, skip=model_id
        )
        return self._evict(victims, now_ms)

    def failed(self, model_id: ModelId, now_ms: int) -> None:
        """Mark a model FAILED (weight FAILED_UNITS); no-op for one being unloaded."""
        slot = self._require(model_id)
        if slot.state is not EntryState.UNLOADING:
            self._change(slot, EntryState.FAILED, FAILED_UNITS, now_ms)

    def remove(self, model_id: ModelId) -> CacheEntry | None:
        """Mark a model UNLOADING; the entry as it was before, or None when absent.

        Its units stay taken until `unloaded()`: the caller unloads it first.
        """
        slot = self._slots.get(model_id)
        if slot is None:
            return None
        before = slot.snapshot()
        if slot.state is not EntryState.UNLOADING:
            self._change(slot, EntryState.UNLOADING, slot.units, slot.state_since_ms)
        return before

    def unloaded(self, model_id: ModelId) -> CacheEntry | None:
        """Drop the entry of a model the runtime no longer holds; it, or None."""
        slot = self._slots.get(model_id)
        if slot is None:
            return None
        self._pop(slot)
        return slot.snapshot()

    # ------------------------------------------------------------ internals

    def _room(self) -> int:
        """Units an admission may use without evicting (negative when over)."""
        unclaimed = self._unloading_units - self._claimed_units
        return self.capacity_units - self._cached_units - unclaimed

    def _choose_victims(
        self,
        need: int,
        stale_after: int,
        churn_after: int,
        *,
        loaded_after: int,
        skip: ModelId | None = None,
    ) -> tuple[list[_Slot], int, Refusal | None]:
        """LOADED entries freeing `need` units, least worth keeping first:
        (victims, units missing, why the rest could not go).

        Entries used after `churn_after` or loaded after `loaded_after` are too young
        to evict; under LRU, the walk stops at the first entry used after
        `stale_after` (newer than the newcomer). Protected entries never go.
        """
        if self.scoring is not None:
            return self._choose_by_value(need, churn_after, loaded_after, skip)
        victims: list[_Slot] = []
        kept = False
        young = False
        for slot in self._slots.values():
            if need <= 0:
                break
            if slot.state is not EntryState.LOADED or slot.model_id == skip:
                continue
            if self.protected(slot.model_id):
                kept = True
                continue
            if slot.last_used_ms > stale_after:
                return victims, need, Refusal.CHURN if young else Refusal.STALE
            if slot.last_used_ms > churn_after:
                return victims, need, Refusal.CHURN
            if slot.state_since_ms > loaded_after:
                young = True
                continue
            victims.append(slot)
            need -= slot.units
        return victims, need, _shortfall(need, young=young, kept=kept)

    def _choose_by_value(
        self, need: int, churn_after: int, loaded_after: int, skip: ModelId | None
    ) -> tuple[list[_Slot], int, Refusal | None]:
        victims: list[_Slot] = []
        kept: list[_Slot] = []  # examined, not chosen: back into the heap afterwards
        young = protected = False
        while need > 0:
            slot = self._heap_top()
            if slot is None:
                break
            heapq.heappop(self._heap)
            slot.heap_key = float("nan")  # no live heap entry until pushed again
            if slot.model_id == skip:
                kept.append(slot)
            elif self.protected(slot.model_id):
                protected = True
                kept.append(slot)
            elif slot.last_used_ms > churn_after or slot.state_since_ms > loaded_after:
                young = True
                kept.append(slot)
            else:
                victims.append(slot)
                need -= slot.units
        for slot in kept:
            self._push(slot)
        if need > 0:
            for slot in victims:
                self._push(slot)
        return victims, need, _shortfall(need, young=young, kept=protected)

    def _heap_top(self) -> _Slot | None:
        """The LOADED entry of least value (value policy), its heap entry on top."""
        heap = self._heap
        while heap:
            key, _, slot = heap[0]
            if slot.heap_key != key or self._slots.get(slot.model_id) is not slot:
                heapq.heappop(heap)  # superseded by a newer entry, or gone
            elif slot.state is not EntryState.LOADED:
                heapq.heappop(heap)
                slot.heap_key = float("nan")  # pushed again when it is LOADED again
            elif slot.value > key:
                heapq.heappop(heap)  # used since it was pushed: its place moved up
                self._push(slot)
            else:
                return slot
        return None

    def _push(self, slot: _Slot) -> None:
        slot.heap_key = slot.value
        heapq.heappush(self._heap, (slot.heap_key, next(self._seq), slot))

    def _refuse(
        self,
        weight: int,
        missing: int,
        stop: Refusal | None,
        *,
        now_ms: int,
        policy: EvictionPolicy,
    ) -> Admission:
        unclaimed = self._unloading_units - self._claimed_units
        # Space that frees itself soon beats a guard: retrying later will work.
        reason = Refusal.UNLOADING if missing <= unclaimed else stop or Refusal.BUSY
        counts = self._counts
        detail = (
            f"{reason}: needs {weight} units, {missing} more than the models allowed to "
            f"go can free ({self.used_units}/{self.capacity_units} units used by "
            f"{counts[EntryState.LOADED]} loaded, {counts[EntryState.LOADING]} loading, "
            f"{unclaimed} units unloading"
        )
        if reason is Refusal.CHURN:
            window = policy.min_churn_age_ms
            recent = self.used_since(now_ms - window) if window else 0
            detail += (
                f"; {recent} loaded models used within the last {window} ms "
                f"(MM_MIN_CHURN_AGE_MS), models loaded within the last "
                f"{policy.min_loaded_age_ms} ms are kept too"
            )
        return Admission(refusal=reason, detail=detail + ")")

    def _evict(self, victims: list[_Slot], now_ms: int) -> tuple[CacheEntry, ...]:
        for slot in victims:
            self._account(slot, -1)
            slot.state = EntryState.UNLOADING
            slot.state_since_ms = now_ms
            slot.claimed = True
            self._account(slot, +1)
        return tuple(slot.snapshot() for slot in victims)

    def _change(self, slot: _Slot, state: EntryState, units: int, now_ms: int) -> None:
        self._account(slot, -1)
        slot.state = state
        slot.units = units
        slot.state_since_ms = now_ms
        self._account(slot, +1)

    def _account(self, slot: _Slot, sign: int) -> None:
        """Add (+1) or take away (-1) what `slot` contributes to the totals."""
        self._counts[slot.state] += sign
        if slot.state is EntryState.UNLOADING:
            self._unloading_units += sign * slot.units
            if slot.claimed:
                self._claimed_units += sign * slot.units
        else:
            self._cached_units += sign * slot.units

    def _insert(self, slot: _Slot) -> None:
        """Put `slot` at its place in last-use order (after entries used at the same time)."""
        if slot.last_used_ms >= self._newest_ms:
            self._slots[slot.model_id] = slot
            self._newest_ms = slot.last_used_ms
            return
        newer = slot.last_used_ms
        later = [key for key, other in self._slots.items() if other.last_used_ms > newer]
        self._slots[slot.model_id] = slot
        for key in later:
            self._slots.move_to_end(key)

    def _pop(self, slot: _Slot) -> None:
        del self._slots[slot.model_id]
        self._account(slot, -1)
        if self._history is not None and slot.state is not EntryState.FAILED:
            self._history.remember(slot.model_id, slot.frequency, slot.last_used_ms)

    def _require(self, model_id: ModelId) -> _Slot:
        slot = self._slots.get(model_id)
        if slot is None:
            raise ValueError(f"model {model_id} is not in the cache")
        return slot


def _unprotected(_: ModelId) -> bool:
    return False


def _shortfall(need: int, *, young: bool, kept: bool) -> Refusal | None:
    """Why the victims found do not free enough: entries too young to go (cache churn)
    first, then entries protected as minimum copies."""
    if need <= 0:
        return None
    if young:
        return Refusal.CHURN
    return Refusal.PROTECTED if kept else None
