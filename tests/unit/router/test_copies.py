"""Copy scaling decisions (mmesh.router.copies): scale-down table, budget, last-use refresh,
minimum copies, and a simulation showing scale-up and scale-down never oscillate."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router.copies import (
    CopyPolicy,
    LocalCopy,
    MeshView,
    idle_ms,
    is_min_copy,
    keep_reason,
    last_use_to_publish,
    plan_scale_down,
    wants_another_copy,
)

S = 1000
NOW = 10_000_000 * S
POLICY = CopyPolicy(
    scaleup_rpm=600,
    idle_max_ms=120 * S,
    steady_gap_ms=30 * S,
    settle_ms=60 * S,
    unload_gap_ms=20 * S,
    max_free_fraction=0.05,
)
LIMIT = 400  # 2/3 of 600


def record(
    *holders: str,
    loaded_ago_s: float = 3600,
    last_used_ago_s: float = 3600,
    unloaded_ago_s: float = 3600,
    min_copies: int = 0,
    loading: tuple[str, ...] = (),
) -> ModelRecord:
    start = NOW - int(loaded_ago_s * S)
    return ModelRecord(
        model_type="stub",
        instance_ids={InstanceId(h): start for h in (*holders, *loading)},
        loaded_in={InstanceId(h): start for h in holders},
        last_used_ms=NOW - int(last_used_ago_s * S),
        last_unload_ms=NOW - int(unloaded_ago_s * S),
        min_copies=min_copies,
    )


def mesh(rpm: Mapping[str, int] | None = None, *, free: float = 0.0) -> MeshView:
    live = {"me": 0, "b": 0, "c": 0, "d": 0} if rpm is None else {"me": 0, **rpm}
    return MeshView("me", live, free_fraction=free, cache_age_ms=3600 * S, now_ms=NOW)


def idle_copy(ago_s: float = 3600, rpm: int = 0, units: int = 10) -> LocalCopy:
    return LocalCopy("m", units, NOW - int(ago_s * S), rpm)


# ---------------------------------------------------------------- scale-down table

KEEP_CASES = [
    # (case, copy, record, mesh, reason fragment or None = removed)
    ("idle extra copy goes", idle_copy(), record("me", "b"), mesh(), None),
    ("idle third copy goes", idle_copy(), record("me", "b", "c"), mesh(), None),
    ("only copy stays", idle_copy(), record("me"), mesh(), "1 live loaded copies"),
    (
        "the other copy's pod is gone",
        idle_copy(),
        record("me", "gone"),
        mesh(),
        "1 live loaded copies",
    ),
    (
        "min copies 2 keeps the second",
        idle_copy(),
        record("me", "b", min_copies=2),
        mesh(),
        "min copies 2",
    ),
    (
        "min copies 2 lets the third go",
        idle_copy(),
        record("me", "b", "c", min_copies=2),
        mesh(),
        None,
    ),
    ("mesh has room", idle_copy(), record("me", "b"), mesh(free=0.30), "30% free"),
    ("mesh at the free limit", idle_copy(), record("me", "b"), mesh(free=0.05), None),
    (
        "a copy loaded recently (scale-up settling)",
        idle_copy(),
        record("me", "b", loaded_ago_s=59),
        mesh(),
        "started loading 59000 ms ago",
    ),
    (
        "a copy is loading",
        idle_copy(),
        record("me", "b", "c", loading=("d",), loaded_ago_s=1),
        mesh(),
        "started loading",
    ),
    (
        "another copy went recently",
        idle_copy(),
        record("me", "b", "c", unloaded_ago_s=19),
        mesh(),
        "removed 19000 ms ago",
    ),
    ("used recently here", idle_copy(ago_s=100), record("me", "b"), mesh(), "used 100000 ms ago"),
    (
        "2 -> 1: used recently elsewhere (lu)",
        idle_copy(),
        record("me", "b", last_used_ago_s=140),
        mesh(),
        "used 140000 ms ago elsewhere (idle after 150000 ms)",
    ),
    (
        "3 -> 2: use elsewhere does not keep this copy",
        idle_copy(),
        record("me", "b", "c", last_used_ago_s=1),
        mesh(),
        None,
    ),
    (
        "remaining copy busy",
        idle_copy(),
        record("me", "b"),
        mesh({"b": LIMIT + 1}),
        f"up to {LIMIT + 1} req/min (limit {LIMIT})",
    ),
    (
        "remaining copy at 2/3 of the threshold",
        idle_copy(),
        record("me", "b"),
        mesh({"b": LIMIT}),
        None,
    ),
    (
        "this copy's own rate would push the remaining one over",
        idle_copy(rpm=1),
        record("me", "b"),
        mesh({"b": LIMIT}),
        f"up to {LIMIT + 1} req/min",
    ),
    (
        "busiest of the remaining copies counts",
        idle_copy(),
        record("me", "b", "c"),
        mesh({"b": 10, "c": 500}),
        "up to 500 req/min",
    ),
]


@pytest.mark.parametrize(
    ("copy", "rec", "view", "expected"),
    [case[1:] for case in KEEP_CASES],
    ids=[case[0] for case in KEEP_CASES],
)
def test_keep_or_remove(
    copy: LocalCopy, rec: ModelRecord, view: MeshView, expected: str | None
) -> None:
    reason = keep_reason(copy, rec, view, POLICY)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


@pytest.mark.parametrize(
    ("cache_age_s", "expected_s"),
    [(0, 30), (100, 30), (600, 60), (1200, 120), (100_000, 120)],
)
def test_idle_window_is_a_tenth_of_the_cache_age_within_the_clamps(
    cache_age_s: int, expected_s: int
) -> None:
    assert idle_ms(cache_age_s * S, POLICY) == expected_s * S


def test_a_run_frees_at_most_its_budget_oldest_first_but_always_one() -> None:
    copies = [
        LocalCopy("new", 10, NOW - 1000 * S),
        LocalCopy("old", 10, NOW - 3000 * S),
        LocalCopy("mid", 10, NOW - 2000 * S),
    ]
    records = {c.model_id: record("me", "b") for c in copies}
    assert plan_scale_down(copies, records, mesh(), POLICY, capacity_units=400) == ["old", "mid"]
    assert plan_scale_down(copies, records, mesh(), POLICY, capacity_units=10) == ["old"]
    records["old"] = record("me")  # not an extra copy: skipped, not counted
    assert plan_scale_down(copies, records, mesh(), POLICY, capacity_units=200) == ["mid"]


@pytest.mark.parametrize(
    ("holders", "local_ago_s", "lu_ago_s", "expected"),
    [
        (("me", "b"), 0, 10, NOW),  # 10 s stale >= a quarter of the 30 s idle window
        (("me", "b"), 0, 5, None),  # fresh enough
        (("me",), 0, 100, None),  # no other copy to tell
        (("me", "b"), 50, 40, None),  # the record is newer than our use
    ],
)
def test_last_use_is_republished_only_for_shared_models_when_stale(
    holders: tuple[str, ...], local_ago_s: int, lu_ago_s: int, expected: int | None
) -> None:
    view = replace(mesh(), cache_age_ms=0)
    rec = record(*holders, last_used_ago_s=lu_ago_s)
    assert last_use_to_publish(idle_copy(ago_s=local_ago_s), rec, view, POLICY) == expected


@pytest.mark.parametrize(
    ("holders", "min_copies", "live", "expected"),
    [
        (("me", "b"), 2, {"me", "b"}, True),
        (("me", "b", "c"), 2, {"me", "b", "c"}, False),  # one above the minimum: may go
        (("me", "b", "c"), 2, {"me", "b"}, True),  # c's pod is gone
        (("me",), 0, {"me"}, False),
        (("b", "c"), 2, {"b", "c"}, False),  # not held here
    ],
)
def test_min_copy_protection(
    holders: tuple[str, ...], min_copies: int, live: set[str], expected: bool
) -> None:
    rec = record(*holders, min_copies=min_copies)
    assert is_min_copy(rec, "me", lambda iid: iid in live) is expected
    assert is_min_copy(None, "me", lambda iid: True) is False


def test_of_more_copies_than_the_minimum_only_the_newest_are_unprotected() -> None:
    rec = record("me", "b", "c", min_copies=2)
    started = {InstanceId("c"): NOW - 3000, InstanceId("me"): NOW - 2000, InstanceId("b"): NOW}
    rec = replace(rec, instance_ids=started)
    everyone = {"me", "b", "c"}
    protected = {iid for iid in everyone if is_min_copy(rec, iid, lambda i: i in everyone)}
    assert protected == {"c", "me"}


def test_a_rate_at_the_threshold_is_no_reason_to_scale_up() -> None:
    assert not wants_another_copy(600, POLICY.scaleup_rpm)
    assert wants_another_copy(601, POLICY.scaleup_rpm)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="scaleup_rpm"):
        CopyPolicy(scaleup_rpm=0)
    with pytest.raises(ValueError, match="max_free_fraction"):
        CopyPolicy(scaleup_rpm=10, max_free_fraction=1.5)


# ---------------------------------------------------------------- no oscillation

TICK_S = 10
PODS = ("p0", "p1", "p2", "p3", "p4", "p5")


@dataclass
class Sim:
    """One model in a full mesh, scaled by the rules every rate window of TICK_S."""

    rate: int
    spread: str
    """'even' (least-busy routing) or 'first' (one client connection: one copy takes all)."""
    now: int = NOW
    loaded: dict[str, int] = field(default_factory=lambda: {"p0": NOW - 3600 * S})
    last_use: dict[str, int] = field(default_factory=dict)
    lu: int = 0
    last_unload: int = 0
    history: list[int] = field(default_factory=list)

    def shares(self) -> dict[str, int]:
        holders = sorted(self.loaded)
        if self.spread == "even":
            return {h: self.rate // len(holders) for h in holders}
        return {h: self.rate if h == holders[0] else 0 for h in holders}

    def record(self) -> ModelRecord:
        ids = {InstanceId(h): t for h, t in self.loaded.items()}
        return ModelRecord(
            "stub", instance_ids=ids, loaded_in=ids, last_used_ms=self.lu,
            last_unload_ms=self.last_unload,
        )  # fmt: skip

    def tick(self) -> None:
        self.now += TICK_S * S
        shares = self.shares()
        for holder, rpm in shares.items():
            if rpm:
                self.last_use[holder] = self.now
        view_rpm = {p: shares.get(p, 0) for p in PODS}
        # Scale-up: the lowest holder over the threshold asks for one more copy.
        if any(wants_another_copy(rpm, POLICY.scaleup_rpm) for rpm in shares.values()):
            spare = [p for p in PODS if p not in self.loaded]
            if spare:
                self.loaded[spare[0]] = self.now
        # Holders republish the model's last use, then each judges its own copy.
        for holder in sorted(self.loaded):
            copy = LocalCopy("m", 10, self.last_use.get(holder, 0), shares.get(holder, 0))
            view = MeshView(holder, view_rpm, 0.0, 3600 * S, self.now)
            published = last_use_to_publish(copy, self.record(), view, POLICY)
            if published is not None:
                self.lu = max(self.lu, published)
        for holder in sorted(self.loaded):
            copy = LocalCopy("m", 10, self.last_use.get(holder, 0), shares.get(holder, 0))
            view = MeshView(holder, view_rpm, 0.0, 3600 * S, self.now)
            if plan_scale_down([copy], {"m": self.record()}, view, POLICY, capacity_units=1000):
                del self.loaded[holder]
                self.last_unload = self.now
        self.history.append(len(self.loaded))


def direction_changes(history: list[int]) -> int:
    steps = [b - a for a, b in itertools.pairwise(history) if b != a]
    return sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))


@pytest.mark.parametrize("spread", ["even", "first"])
@pytest.mark.parametrize(
    "rate",
    [0, LIMIT, LIMIT + 1, 600, 601, 800, 1200, 1201, 1800, 2400],
    ids=lambda r: f"{r}rpm",
)
def test_copies_never_oscillate_at_a_steady_rate(rate: int, spread: str) -> None:
    sim = Sim(rate=rate, spread=spread)
    for _ in range(2000):  # 5.5 hours of rate windows
        sim.tick()
    assert direction_changes(sim.history) == 0, sim.history
    assert sim.history[-1] == sim.history[-100], "still moving after hours"


@pytest.mark.parametrize("spread", ["even", "first"])
@pytest.mark.parametrize("copies", [1, 2, 3])
def test_a_rate_sitting_at_the_threshold_moves_neither_way(copies: int, spread: str) -> None:
    sim = Sim(rate=600 * (copies if spread == "even" else 1), spread=spread)
    for pod in PODS[1:copies]:
        sim.loaded[pod] = NOW - 3600 * S  # copies from an earlier burst
    for _ in range(500):
        sim.tick()
    assert set(sim.history) == {copies}


def test_an_idle_model_sheds_its_extra_copies_one_gap_at_a_time() -> None:
    sim = Sim(rate=0, spread="even")
    for pod in PODS[1:4]:
        sim.loaded[pod] = NOW - 3600 * S
    for _ in range(100):
        sim.tick()
    assert sim.history[-1] == 1
    assert direction_changes(sim.history) == 0
    removals = [i for i, (a, b) in enumerate(itertools.pairwise([4, *sim.history])) if b < a]
    assert len(removals) == 3
    gaps = [b - a for a, b in itertools.pairwise(removals)]
    assert all(gap * TICK_S * S >= POLICY.unload_gap_ms for gap in gaps), gaps


def test_a_busy_model_keeps_the_copies_it_scaled_up_to() -> None:
    sim = Sim(rate=1500, spread="even")
    for _ in range(500):
        sim.tick()
    assert sim.history[-1] == 3  # 500 req/min each: under 600, over 2/3 of it
    assert max(sim.history) == 3
