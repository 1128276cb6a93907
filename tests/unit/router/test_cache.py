"""This pod's weighted LRU of models (mmesh.router.cache)."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from mmesh.core.ids import ModelId
from mmesh.router.cache import (
    FAILED_UNITS,
    Admission,
    EntryState,
    EvictionPolicy,
    LocalCache,
    Refusal,
)

NO_GUARD = EvictionPolicy(min_churn_age_ms=0)
MINUTE = 60_000


def M(name: str) -> ModelId:
    return ModelId(name)


def admit(
    cache: LocalCache, name: str, units: int = 1, *, at: int, policy: EvictionPolicy = NO_GUARD
) -> Admission:
    return cache.admit(M(name), units, last_used_ms=at, now_ms=at, policy=policy)


def load(cache: LocalCache, name: str, units: int = 1, *, at: int) -> list[str]:
    """Admit, unload the victims at once, mark loaded: the names evicted."""
    admission = admit(cache, name, units, at=at)
    assert admission.admitted, admission.detail
    for victim in admission.victims:
        cache.unloaded(victim.model_id)
    cache.loaded(M(name), units, at)
    return [victim.model_id for victim in admission.victims]


def replay(cache: LocalCache, script: str, *, start: int = 1) -> list[str]:
    """Requests, one letter each, at t = start, start + 1, ...: the names evicted, in order."""
    evicted: list[str] = []
    for t, name in enumerate(script, start=start):
        if cache.touch(M(name), t) is None:
            evicted += load(cache, name, at=t)
    return evicted


def oracle_lru(capacity: int, script: str) -> list[str]:
    lru: OrderedDict[str, None] = OrderedDict()
    evicted = []
    for name in script:
        if name in lru:
            lru.move_to_end(name)
            continue
        if len(lru) == capacity:
            evicted.append(lru.popitem(last=False)[0])
        lru[name] = None
    return evicted


def names(cache: LocalCache) -> list[str]:
    return [entry.model_id for entry in cache.entries()]


# ---------------------------------------------------------------- LRU order


def test_evicts_least_recently_used_first() -> None:
    cache = LocalCache(3)
    assert replay(cache, "ABCAD") == ["B"]  # A was used again, so B is the oldest
    assert replay(cache, "E", start=6) == ["C"]
    assert replay(cache, "AB", start=7) == ["D"]  # A hits; B comes back in D's place
    assert names(cache) == ["E", "A", "B"]
    assert repr(cache) == "<LocalCache 3/3 loaded, 3/3 units, 0 loading, 0 failed, 0 unloading>"


@pytest.mark.parametrize("capacity", [3, 5])
def test_scripted_pattern_evicts_exactly_what_lru_predicts(capacity: int) -> None:
    rng = random.Random(capacity)
    script = "".join(rng.choice("ABCDEFGH") for _ in range(400)) + "ABCABCABCDDDEEEFGHHH"
    cache = LocalCache(capacity)
    assert replay(cache, script) == oracle_lru(capacity, script)
    assert cache.count == capacity
    assert cache.used_units == capacity


def test_touch_moves_a_model_to_the_young_end() -> None:
    cache = LocalCache(10)
    for t, name in enumerate("ABC", start=1):
        load(cache, name, at=t)
    assert cache.touch(M("A"), 10) is EntryState.LOADED
    assert names(cache) == ["B", "C", "A"]
    assert cache.lru_time_ms() == 2
    assert cache.get(M("A")).last_used_ms == 10  # type: ignore[union-attr]


def test_touch_of_an_absent_model_is_none() -> None:
    assert LocalCache(1).touch(M("nope"), 1) is None


def test_touch_with_an_older_clock_keeps_the_order_sorted() -> None:
    cache = LocalCache(10)
    for t, name in zip((10, 20, 30), "ABC", strict=True):
        load(cache, name, at=t)
    cache.touch(M("A"), 25)  # the clock stepped back: A goes between B and C
    assert names(cache) == ["B", "A", "C"]
    cache.touch(M("C"), 5)  # older than C's own last use: nothing changes
    assert [e.last_used_ms for e in cache.entries()] == [20, 25, 30]


def test_placeholder_goes_to_its_place_in_last_use_order() -> None:
    cache = LocalCache(10)
    load(cache, "A", at=100)
    load(cache, "B", at=200)
    assert admit(cache, "old", at=150).admitted
    assert names(cache) == ["A", "old", "B"]


def test_lru_time_is_the_oldest_loaded_model() -> None:
    cache = LocalCache(10)
    assert cache.lru_time_ms() is None
    admit(cache, "loading", at=1)
    assert cache.lru_time_ms() is None
    load(cache, "A", at=5)
    load(cache, "B", at=7)
    assert cache.lru_time_ms() == 5


# ---------------------------------------------------------------- weights


def test_big_model_evicts_as_many_oldest_models_as_it_needs() -> None:
    cache = LocalCache(100)
    for t, (name, units) in enumerate([("A", 30), ("B", 30), ("C", 20), ("D", 20)], start=1):
        load(cache, name, units, at=t)
    assert load(cache, "big", 55, at=10) == ["A", "B"]
    assert cache.used_units == 95
    assert cache.free_units == 5


def test_admission_with_room_evicts_nothing() -> None:
    cache = LocalCache(100)
    load(cache, "A", 60, at=1)
    admission = admit(cache, "B", 40, at=2)
    assert admission == Admission()
    assert admission.admitted
    assert cache.get(M("B")).state is EntryState.LOADING  # type: ignore[union-attr]
    assert cache.free_units == 0


def test_every_entry_weighs_at_least_one_unit() -> None:
    cache = LocalCache(10)
    load(cache, "empty", 0, at=1)
    assert cache.get(M("empty")).units == 1  # type: ignore[union-attr]


def test_model_larger_than_the_cache_is_refused() -> None:
    cache = LocalCache(10)
    admission = admit(cache, "huge", 11, at=1)
    assert admission.refusal is Refusal.TOO_BIG
    assert "11" in admission.detail
    assert cache.count == 0


def test_failed_entry_weighs_one_unit() -> None:
    cache = LocalCache(100)
    admit(cache, "A", 40, at=1)
    assert cache.used_units == 40
    cache.failed(M("A"), 5)
    entry = cache.get(M("A"))
    assert entry is not None
    assert (entry.state, entry.units, entry.state_since_ms) == (EntryState.FAILED, FAILED_UNITS, 5)
    assert cache.used_units == FAILED_UNITS


def test_failed_entry_is_replaced_by_a_new_admission() -> None:
    cache = LocalCache(10)
    load(cache, "A", 9, at=1)
    admit(cache, "B", 1, at=2)
    cache.failed(M("B"), 3)
    assert cache.free_units == 0
    assert admit(cache, "B", 1, at=4) == Admission()  # its own unit is reused, nothing evicted
    assert cache.get(M("B")).state is EntryState.LOADING  # type: ignore[union-attr]
    assert cache.count == 2


@pytest.mark.parametrize("state", ["loading", "loaded", "unloading"])
def test_admitting_a_model_already_present_is_an_error(state: str) -> None:
    cache = LocalCache(10)
    admit(cache, "A", at=1)
    if state != "loading":
        cache.loaded(M("A"), 1, 2)
    if state == "unloading":
        cache.remove(M("A"))
    with pytest.raises(ValueError, match="already in the cache"):
        admit(cache, "A", at=3)


# ---------------------------------------------------------------- loaded(): size correction


def test_loaded_with_a_bigger_size_evicts_more() -> None:
    cache = LocalCache(100)
    for t, name in enumerate("ABCD", start=1):
        load(cache, name, 20, at=t)
    admission = admit(cache, "new", 20, at=10)
    assert admission.victims == ()
    victims = cache.loaded(M("new"), 45, 11)
    assert [v.model_id for v in victims] == ["A", "B"]
    assert all(v.state is EntryState.UNLOADING for v in victims)
    assert cache.get(M("new")).units == 45  # type: ignore[union-attr]


def test_loaded_evicts_regardless_of_the_churn_age() -> None:
    cache = LocalCache(10)
    load(cache, "A", 5, at=1000)
    cache.admit(M("B"), 5, last_used_ms=1001, now_ms=1001, policy=EvictionPolicy(MINUTE))
    victims = cache.loaded(M("B"), 8, 1002)  # the memory is taken already: A must go
    assert [v.model_id for v in victims] == ["A"]


def test_loaded_never_evicts_the_model_itself() -> None:
    cache = LocalCache(10)
    load(cache, "young", 5, at=100)
    assert admit(cache, "old", 5, at=50).admitted
    assert [v.model_id for v in cache.loaded(M("old"), 7, 101)] == ["young"]
    assert cache.get(M("old")).state is EntryState.LOADED  # type: ignore[union-attr]


def test_loaded_beyond_capacity_with_nothing_to_evict_overcommits() -> None:
    cache = LocalCache(10)
    admit(cache, "A", 5, at=1)
    admit(cache, "B", 5, at=2)
    assert cache.loaded(M("A"), 8, 3) == ()
    assert cache.used_units == 13
    assert cache.free_units == 0


def test_loaded_with_a_smaller_size_frees_room() -> None:
    cache = LocalCache(10)
    admit(cache, "A", 8, at=1)
    assert cache.loaded(M("A"), 3, 2) == ()
    assert cache.free_units == 7


def test_loaded_after_remove_keeps_the_model_unloading() -> None:
    cache = LocalCache(10)
    admit(cache, "A", 4, at=1)
    cache.remove(M("A"))
    assert cache.loaded(M("A"), 4, 2) == ()
    assert cache.get(M("A")).state is EntryState.UNLOADING  # type: ignore[union-attr]


def test_loaded_of_a_failed_or_absent_model_is_an_error() -> None:
    cache = LocalCache(10)
    admit(cache, "A", at=1)
    cache.failed(M("A"), 2)
    with pytest.raises(ValueError, match="failed"):
        cache.loaded(M("A"), 1, 3)
    with pytest.raises(ValueError, match="not in the cache"):
        cache.loaded(M("B"), 1, 3)


# ---------------------------------------------------------------- unloading


def test_unloading_entries_hold_their_space() -> None:
    cache = LocalCache(10)
    load(cache, "A", 6, at=1)
    load(cache, "B", 4, at=2)
    before = cache.remove(M("A"))
    assert before is not None
    assert before.state is EntryState.LOADED  # remove() tells what it was
    assert cache.get(M("A")).state is EntryState.UNLOADING  # type: ignore[union-attr]
    assert (cache.used_units, cache.free_units, cache.unloading_units) == (10, 0, 6)
    assert cache.count == 1

    refused = admit(cache, "C", 5, at=3)
    assert refused.refusal is Refusal.UNLOADING
    assert "still unloading" in refused.detail
    assert cache.get(M("C")) is None

    gone = cache.unloaded(M("A"))
    assert gone is not None
    assert gone.model_id == "A"
    assert cache.free_units == 6
    assert admit(cache, "C", 5, at=4) == Admission()


def test_victims_units_are_promised_to_the_newcomer_only_once() -> None:
    cache = LocalCache(10)
    for t, name in enumerate("ABCDE", start=1):
        load(cache, name, 2, at=t)
    first = admit(cache, "X", 3, at=10)  # A and B go; 1 unit of theirs is left over
    assert [v.model_id for v in first.victims] == ["A", "B"]
    assert cache.used_units == 13  # A and B still take memory until unloaded
    second = admit(cache, "Y", 1, at=11)  # fits in the left-over unit: no second eviction
    assert second == Admission()
    third = admit(cache, "Z", 2, at=12)
    assert [v.model_id for v in third.victims] == ["C"]
    for victim in (*first.victims, *third.victims):
        cache.unloaded(victim.model_id)
    assert cache.used_units == 10


def test_remove_of_an_absent_model_is_none_and_unloaded_is_idempotent() -> None:
    cache = LocalCache(10)
    assert cache.remove(M("A")) is None
    assert cache.unloaded(M("A")) is None
    admit(cache, "A", at=1)
    cache.remove(M("A"))
    again = cache.remove(M("A"))
    assert again is not None
    assert again.state is EntryState.UNLOADING
    assert cache.unloaded(M("A")) is not None
    assert cache.unloaded(M("A")) is None
    assert cache.used_units == 0


def test_failed_is_ignored_for_a_model_being_unloaded() -> None:
    cache = LocalCache(10)
    admit(cache, "A", 5, at=1)
    cache.remove(M("A"))
    cache.failed(M("A"), 2)
    assert cache.get(M("A")).state is EntryState.UNLOADING  # type: ignore[union-attr]
    assert cache.unloading_units == 5


# ---------------------------------------------------------------- refusals


def test_churn_guard_refuses_and_changes_nothing() -> None:
    cache = LocalCache(4)
    for t, name in enumerate("ABCD", start=1):
        load(cache, name, at=t * 1000)
    before = (repr(cache), cache.entries())
    admission = cache.admit(
        M("E"), 1, last_used_ms=10_000, now_ms=10_000, policy=EvictionPolicy(MINUTE)
    )
    assert admission.refusal is Refusal.CHURN
    assert admission.detail.startswith("cache churn")
    assert not admission.admitted
    assert (repr(cache), cache.entries()) == before


def test_churn_guard_lets_old_enough_models_go() -> None:
    cache = LocalCache(3)
    load(cache, "old", at=0)
    load(cache, "young1", at=MINUTE)
    load(cache, "young2", at=MINUTE + 1)
    now = MINUTE + 10
    policy = EvictionPolicy(min_churn_age_ms=MINUTE)
    admission = cache.admit(M("new"), 1, last_used_ms=now, now_ms=now, policy=policy)
    assert [v.model_id for v in admission.victims] == ["old"]
    refused = cache.admit(M("new2"), 1, last_used_ms=now, now_ms=now, policy=policy)
    assert refused.refusal is Refusal.CHURN
    assert cache.get(M("young1")).state is EntryState.LOADED  # type: ignore[union-attr]


def test_churn_guard_refusal_keeps_the_evictable_ones_too() -> None:
    cache = LocalCache(4)
    load(cache, "old", 2, at=0)
    load(cache, "young", 2, at=MINUTE)
    policy = EvictionPolicy(min_churn_age_ms=MINUTE)
    now = MINUTE + 1
    refused = cache.admit(M("new"), 4, last_used_ms=now, now_ms=now, policy=policy)
    assert refused.refusal is Refusal.CHURN
    assert cache.get(M("old")).state is EntryState.LOADED  # type: ignore[union-attr]


def test_model_older_than_every_loaded_model_is_skipped_in_a_full_cache() -> None:
    cache = LocalCache(2)
    load(cache, "A", at=100)
    load(cache, "B", at=200)
    # registered long ago and never used since: it would be the first to go
    admission = cache.admit(M("stale"), 1, last_used_ms=50, now_ms=300, policy=NO_GUARD)
    assert admission.refusal is Refusal.STALE
    assert cache.get(M("stale")) is None
    assert names(cache) == ["A", "B"]


def test_older_newcomer_may_still_evict_models_older_than_itself() -> None:
    cache = LocalCache(2)
    load(cache, "A", at=100)
    load(cache, "B", at=200)
    admission = cache.admit(M("mid"), 1, last_used_ms=150, now_ms=300, policy=NO_GUARD)
    assert [v.model_id for v in admission.victims] == ["A"]
    assert names(cache) == ["A", "mid", "B"]


def test_loading_entries_are_never_evicted() -> None:
    cache = LocalCache(3)
    for t, name in enumerate("ABC", start=1):
        admit(cache, name, at=t)
    admission = admit(cache, "D", at=10)
    assert admission.refusal is Refusal.BUSY
    assert "still loading" in admission.detail
    assert cache.count == 3


def test_failed_entries_are_not_victims() -> None:
    cache = LocalCache(2)
    admit(cache, "A", at=1)
    cache.failed(M("A"), 1)
    load(cache, "B", at=2)
    assert [v.model_id for v in admit(cache, "C", at=3).victims] == ["B"]


def test_unloading_is_the_reason_when_waiting_would_be_enough() -> None:
    cache = LocalCache(4)
    load(cache, "A", 2, at=0)
    load(cache, "young", 2, at=MINUTE)
    cache.remove(M("A"))
    policy = EvictionPolicy(min_churn_age_ms=MINUTE)
    now = MINUTE + 1
    refused = cache.admit(M("new"), 2, last_used_ms=now, now_ms=now, policy=policy)
    assert refused.refusal is Refusal.UNLOADING


# ---------------------------------------------------------------- oracles and errors


def test_repr_reads_like_a_summary() -> None:
    cache = LocalCache(256)
    load(cache, "A", 50, at=1)
    load(cache, "B", 40, at=2)
    load(cache, "C", 20, at=3)
    admit(cache, "D", 10, at=4)
    cache.remove(M("C"))
    assert repr(cache) == (
        "<LocalCache 2/4 loaded, 120/256 units, 1 loading, 0 failed, 1 unloading>"
    )


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="capacity_units"):
        LocalCache(-1)
    with pytest.raises(ValueError, match="min_churn_age_ms"):
        EvictionPolicy(min_churn_age_ms=-1)


def test_failed_of_an_absent_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in the cache"):
        LocalCache(1).failed(M("A"), 1)


@pytest.mark.parametrize("seed", range(5))
def test_random_walk_keeps_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    cache = LocalCache(50)
    policy = EvictionPolicy(min_churn_age_ms=30)
    for now in range(1, 3000):
        name = M(f"m{rng.randrange(40)}")
        state = cache.touch(name, now)
        if state is None:
            _check_admission(cache, name, rng.randint(1, 12), now, policy)
        elif state is EntryState.LOADING:
            if rng.random() < 0.1:
                cache.failed(name, now)
            else:
                cache.loaded(name, rng.randint(1, 12), now)  # may evict more
        elif state is EntryState.FAILED and rng.random() < 0.3:
            cache.remove(name)
        _unload_some(cache, rng)
        _check_totals(cache)


def _check_admission(
    cache: LocalCache, name: ModelId, units: int, now: int, policy: EvictionPolicy
) -> None:
    loaded_before = {e.model_id: e for e in cache.entries() if e.state is EntryState.LOADED}
    admission = cache.admit(name, units, last_used_ms=now, now_ms=now, policy=policy)
    if not admission.admitted:
        assert cache.get(name) is None
        return
    victims = {v.model_id for v in admission.victims}
    assert victims <= set(loaded_before)
    for victim in victims:  # old enough, and no kept model is older than a victim
        assert now - loaded_before[victim].last_used_ms >= policy.min_churn_age_ms
        kept = [e for key, e in loaded_before.items() if key not in victims]
        assert all(e.last_used_ms >= loaded_before[victim].last_used_ms for e in kept)
    cached = sum(e.units for e in cache.entries() if e.state is not EntryState.UNLOADING)
    assert cached <= cache.capacity_units


def _unload_some(cache: LocalCache, rng: random.Random) -> None:
    unloading = [e.model_id for e in cache.entries() if e.state is EntryState.UNLOADING]
    for name in unloading:
        if rng.random() < 0.5:
            cache.unloaded(name)


def _check_totals(cache: LocalCache) -> None:
    entries = cache.entries()
    assert cache.used_units == sum(e.units for e in entries)
    assert cache.count == sum(e.state is not EntryState.UNLOADING for e in entries)
    times = [e.last_used_ms for e in entries]
    assert times == sorted(times)


# ---------------------------------------------------------------- protected entries


def test_protected_entries_are_never_victims_an_older_unprotected_one_goes_instead() -> None:
    pinned = {M("a")}
    cache = LocalCache(2, protected=lambda m: m in pinned)
    load(cache, "a", at=1)  # the oldest, but one of its model's minimum copies
    load(cache, "b", at=2)
    assert load(cache, "c", at=3) == ["b"]
    assert cache.get(M("a")) is not None and cache.get(M("a")).state is EntryState.LOADED


def test_space_held_only_by_protected_entries_refuses_with_its_reason() -> None:
    cache = LocalCache(2, protected=lambda m: True)
    load(cache, "a", at=1)
    load(cache, "b", at=2)
    admission = admit(cache, "c", at=3)
    assert admission.refusal is Refusal.PROTECTED
    assert "minimum copies" in admission.detail and "needs 1 units" in admission.detail
    assert [e.model_id for e in cache.entries()] == ["a", "b"]


def test_a_protected_entry_stops_being_protected_when_the_predicate_says_so() -> None:
    pinned = {M("a")}
    cache = LocalCache(1, protected=lambda m: m in pinned)
    load(cache, "a", at=1)
    assert admit(cache, "b", at=2).refusal is Refusal.PROTECTED
    pinned.clear()  # e.g. a third copy loaded elsewhere
    assert load(cache, "b", at=3) == ["a"]


def test_growing_to_the_real_size_skips_protected_entries() -> None:
    cache = LocalCache(3, protected=lambda m: m == M("a"))
    load(cache, "a", at=1)
    load(cache, "b", at=2)
    assert admit(cache, "c", at=3).admitted
    victims = cache.loaded(M("c"), 2, 3)  # bigger than predicted: b goes, a stays
    assert [v.model_id for v in victims] == ["b"]


# ---------------------------------------------------------------- scans of a full cache


def test_newest_walks_from_the_young_end_and_stops_at_the_limit() -> None:
    cache = LocalCache(10)
    for t, name in enumerate("ABCD", start=1):
        load(cache, name, at=t)
    admit(cache, "E", at=5)  # loading, not loaded
    cache.touch(M("A"), 6)
    assert cache.newest(EntryState.LOADED, 2) == ["A", "D"]
    assert cache.newest(EntryState.LOADED) == ["A", "D", "C", "B"]
    assert cache.newest(EntryState.LOADING) == ["E"]


def test_state_of_agrees_with_the_snapshots() -> None:
    cache = LocalCache(10)
    load(cache, "A", at=1)
    admit(cache, "B", at=2)
    assert all(cache.state_of(e.model_id) is e.state for e in cache.entries())
    assert cache.state_of(M("A")) is EntryState.LOADED
    assert cache.state_of(M("B")) is EntryState.LOADING
    assert cache.state_of(M("Z")) is None
