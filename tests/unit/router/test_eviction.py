"""The value eviction policy (mmesh.router.eviction, LocalCache with a Scoring) and
load-queue-aware placement (mmesh.router.placement)."""

from __future__ import annotations

import math

import pytest

from mmesh.core.ids import ModelId
from mmesh.core.records import InstanceRecord, ModelRecord
from mmesh.router.cache import EntryState, EvictionPolicy, LocalCache, Refusal
from mmesh.router.eviction import History, Scoring
from mmesh.router.placement import Peer, choose_placement

TAU = 10_000.0
SCORING = Scoring(tau_ms=TAU, max_count=32)
NO_GUARD = EvictionPolicy(min_churn_age_ms=0)


def M(name: str) -> ModelId:
    return ModelId(name)


def cache_of(capacity: int, **kwargs: object) -> LocalCache:
    return LocalCache(capacity, scoring=SCORING, **kwargs)  # type: ignore[arg-type]


def request(cache: LocalCache, name: str, at: int, *, load_ms: float | None = None) -> list[str]:
    """One request: a hit, or a load (victims unloaded at once); the names evicted."""
    if cache.touch(M(name), at) is EntryState.LOADED:
        return []
    admission = cache.admit(M(name), 1, last_used_ms=at, now_ms=at, policy=NO_GUARD)
    assert admission.admitted, admission.detail
    for victim in admission.victims:
        cache.unloaded(victim.model_id)
    cache.loaded(M(name), 1, at, load_ms=load_ms)
    return [v.model_id for v in admission.victims]


# ------------------------------------------------------------------ the value itself


def test_one_use_is_worth_its_time_like_an_lru_timestamp() -> None:
    assert SCORING.first_use(1234) == 1234
    assert SCORING.cost_term(1.0, 1) == 0.0


def test_k_uses_at_once_are_worth_one_use_tau_ln_k_later() -> None:
    value = SCORING.first_use(0)
    for _ in range(3):
        value = SCORING.used(value, 0)
    assert value == pytest.approx(TAU * math.log(4))


def test_frequency_is_capped_at_max_count_uses() -> None:
    value = SCORING.first_use(0)
    for _ in range(1000):
        value = SCORING.used(value, 0)
    assert value == pytest.approx(TAU * math.log(32))


def test_cost_term_is_tau_ln_ms_per_unit_within_limits() -> None:
    assert SCORING.cost_term(10_000, 10) == pytest.approx(TAU * math.log(1000))
    assert SCORING.cost_term(1e12, 1) == pytest.approx(8 * TAU)
    assert SCORING.cost_term(1, 10**9) == pytest.approx(-8 * TAU)


def test_history_resumes_a_frequency_and_forgets_old_ones() -> None:
    history = History(SCORING)
    history.remember(M("a"), 5 * TAU, 5 * TAU)
    assert history.resume(M("a"), 5 * TAU) == pytest.approx(5 * TAU + TAU * math.log(2))
    assert len(history) == 0
    history.remember(M("b"), 0.0, 0.0)
    assert history.resume(M("b"), 7 * TAU) == 7 * TAU  # older than 6 tau: a first use


@pytest.mark.parametrize("bad", [{"tau_ms": 0}, {"tau_ms": 1, "max_count": 0.5}])
def test_invalid_scoring_is_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Scoring(**bad)


# ------------------------------------------------------------------ the cache


def use_hot_models(cache: LocalCache) -> int:
    """hot1..hot3 requested 5 times each, 10 ms apart; the time of the last request."""
    t = 0
    for _ in range(5):
        for name in ("hot1", "hot2", "hot3"):
            t += 10
            request(cache, name, t)
    return t


def test_one_off_models_evict_each_other_not_the_frequent_ones() -> None:
    cache = cache_of(4)
    t = use_hot_models(cache)
    evicted = []
    for n in range(20):
        t += 10
        evicted += request(cache, f"once-{n}", t)
    assert all(name.startswith("once-") for name in evicted)
    assert all(cache.get(M(h)) is not None for h in ("hot1", "hot2", "hot3"))


def test_lru_would_have_evicted_the_frequent_ones() -> None:
    cache = LocalCache(4)
    t = use_hot_models(cache)
    evicted = []
    for n in range(4):
        t += 10
        evicted += request(cache, f"once-{n}", t)
    assert {"hot1", "hot2", "hot3"} <= set(evicted)


def test_a_frequent_model_evicted_comes_back_with_its_history() -> None:
    cache = cache_of(2)
    for t in range(0, 100, 10):
        request(cache, "hot", t)
    request(cache, "x", 100)
    cache.remove(M("hot"))
    cache.unloaded(M("hot"))  # gone for a while (e.g. dropped by hand)
    request(cache, "hot", 110)
    request(cache, "x", 115)  # x is used after hot came back: LRU would evict hot
    assert request(cache, "y", 120) == ["x"]


def test_an_expensive_model_outlives_a_cheaper_one_used_as_often() -> None:
    cache = cache_of(2)
    request(cache, "slow", 0, load_ms=10_000)
    request(cache, "fast", 1, load_ms=50)
    assert request(cache, "new", 2, load_ms=100) == ["fast"]


def test_a_big_model_is_worth_less_per_unit_than_a_small_one_of_the_same_load_time() -> None:
    cache = cache_of(12)
    for name, units in (("big", 10), ("small", 1)):
        cache.admit(M(name), units, last_used_ms=0, now_ms=0, policy=NO_GUARD)
        cache.loaded(M(name), units, 0, load_ms=1_000)
    admission = cache.admit(M("new"), 2, last_used_ms=1, now_ms=1, policy=NO_GUARD)
    assert [v.model_id for v in admission.victims] == ["big"]


def test_victim_time_is_the_least_value_and_compares_with_lru_timestamps() -> None:
    cache = cache_of(3)
    assert cache.victim_time_ms() is None
    request(cache, "a", 1_000)
    request(cache, "b", 2_000)
    for t in (3_000, 3_001, 3_002):
        request(cache, "c", t)
    assert cache.victim_time_ms() == 1_000  # one use at 1 s, reference cost: its time
    request(cache, "a", 4_000)
    assert cache.victim_time_ms() == 2_000


def test_protected_models_are_never_evicted() -> None:
    keep = {M("pinned")}
    cache = cache_of(2, protected=lambda m: m in keep)
    request(cache, "pinned", 0)
    request(cache, "other", 1)
    assert request(cache, "new", 2) == ["other"]
    assert request(cache, "newer", 3) == ["new"]
    assert cache.victim_time_ms() is not None


def test_protected_hook_works_under_lru_too() -> None:
    keep = {M("pinned")}
    cache = LocalCache(2, protected=lambda m: m in keep)
    request(cache, "pinned", 0)
    request(cache, "other", 1)
    assert request(cache, "new", 2) == ["other"]


def test_recently_loaded_models_are_kept_and_the_refusal_says_cache_churn() -> None:
    cache = cache_of(2)
    request(cache, "a", 0)
    request(cache, "b", 10)
    policy = EvictionPolicy(min_churn_age_ms=0, min_loaded_age_ms=100)
    refused = cache.admit(M("c"), 1, last_used_ms=50, now_ms=50, policy=policy)
    assert refused.refusal is Refusal.CHURN
    assert refused.detail.startswith("cache churn: needs 1 units")
    assert "2/2 units used by 2 loaded" in refused.detail
    assert cache.get(M("c")) is None
    later = cache.admit(M("c"), 1, last_used_ms=105, now_ms=105, policy=policy)
    assert [v.model_id for v in later.victims] == ["a"]


def test_churn_refusal_counts_the_models_used_within_the_window() -> None:
    cache = cache_of(2)
    request(cache, "a", 0)
    request(cache, "b", 10)
    policy = EvictionPolicy(min_churn_age_ms=1_000)
    refused = cache.admit(M("c"), 1, last_used_ms=20, now_ms=20, policy=policy)
    assert "2 loaded models used within the last 1000 ms (MM_MIN_CHURN_AGE_MS)" in refused.detail


def test_young_models_are_skipped_for_an_older_one() -> None:
    cache = cache_of(3)
    request(cache, "old", 0)
    request(cache, "hot", 500)
    request(cache, "hot", 501)
    policy = EvictionPolicy(min_churn_age_ms=100)
    admission = cache.admit(M("new"), 1, last_used_ms=550, now_ms=550, policy=policy)
    assert admission.admitted
    admission = cache.admit(M("newer"), 1, last_used_ms=560, now_ms=560, policy=policy)
    assert [v.model_id for v in admission.victims] == ["old"]


def test_refused_admission_leaves_the_victim_order_intact() -> None:
    cache = cache_of(2)
    request(cache, "a", 0)
    request(cache, "b", 10)
    guard = EvictionPolicy(min_churn_age_ms=1_000)
    assert not cache.admit(M("c"), 1, last_used_ms=20, now_ms=20, policy=guard).admitted
    assert request(cache, "c", 30) == ["a"]
    assert request(cache, "d", 40) == ["b"]


def test_hit_ratio_beats_lru_on_a_zipf_trace() -> None:
    import random

    rng = random.Random(5)
    n_models, capacity = 200, 20
    weights = [1 / (i + 1) for i in range(n_models)]
    trace = rng.choices(range(n_models), weights, k=20_000)
    hits = {}
    for name, cache in (("lru", LocalCache(capacity)), ("value", cache_of(capacity))):
        count = 0
        for t, i in enumerate(trace):
            if cache.touch(M(f"m{i}"), t) is EntryState.LOADED:
                count += 1
            else:
                request(cache, f"m{i}", t)
        hits[name] = count / len(trace)
    assert hits["value"] >= hits["lru"] + 0.05, hits


# ------------------------------------------------------------------ placement


def test_a_load_goes_where_it_starts_soonest() -> None:
    rec = ModelRecord("stub", "/m")
    full = {"capacity_units": 10, "used_units": 10, "loading_threads": 1}
    busy = InstanceRecord(lru_time_ms=0, loads_in_progress=2, **full)  # type: ignore[arg-type]
    idle = InstanceRecord(lru_time_ms=9_000, loads_in_progress=0, **full)  # type: ignore[arg-type]
    peers = [Peer("busy", busy), Peer("idle", idle)]
    chosen = choose_placement(
        rec, peers, size_units=1, exclude=(), now_ms=10_000, failure_expiry_ms=1
    )
    assert chosen == "idle"


def test_with_equal_queues_the_least_valuable_victim_wins() -> None:
    rec = ModelRecord("stub", "/m")
    full = {"capacity_units": 10, "used_units": 10, "loading_threads": 2}
    a = InstanceRecord(lru_time_ms=5_000, loads_in_progress=1, **full)  # type: ignore[arg-type]
    b = InstanceRecord(lru_time_ms=3_000, loads_in_progress=0, **full)  # type: ignore[arg-type]
    chosen = choose_placement(
        rec, [Peer("a", a), Peer("b", b)], size_units=1, exclude=(), now_ms=1, failure_expiry_ms=1
    )
    assert chosen == "b"  # 1 load on 2 threads starts at once too: the value decides


def test_uses_seen_while_the_model_lived_elsewhere_count_when_it_arrives() -> None:
    cache = cache_of(2)
    for t in range(0, 50, 10):
        cache.note_use(M("remote-hot"), t)  # requests forwarded to the peer holding it
    request(cache, "x", 60)
    request(cache, "remote-hot", 70)  # placed here now
    request(cache, "x", 80)  # x used last: LRU would evict remote-hot next
    assert request(cache, "y", 90) == ["x"]


def test_note_use_of_a_model_held_here_is_a_touch_and_a_no_op_under_lru() -> None:
    cache = cache_of(2)
    request(cache, "a", 0)
    cache.note_use(M("a"), 5)
    assert cache.get(M("a")).last_used_ms == 5  # type: ignore[union-attr]
    lru = LocalCache(2)
    lru.note_use(M("a"), 5)
    assert lru.get(M("a")) is None
