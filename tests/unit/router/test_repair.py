"""The registry repairs a router plans for its own entries (mmesh.router.repair)."""

from __future__ import annotations

import pytest

from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router.repair import (
    Repair,
    RepairKind,
    apply_repair,
    claim_repairs,
    drop_peer_claim,
    unregistered_copies,
    wants_first_load,
)
from mmesh.router.routing import LocalCopy

NOW = 1_700_000_000_000
EXPIRY = 900_000
ME, B = "a", "b"


def rec(
    loaded: tuple[str, ...] = (),
    loading: tuple[str, ...] = (),
    failed: dict[str, int] | None = None,
    last_unload_ms: int = 0,
) -> ModelRecord:
    return ModelRecord(
        model_type="stub",
        instance_ids={InstanceId(i): NOW - 1000 for i in (*loaded, *loading)},
        loaded_in={InstanceId(i): NOW - 500 for i in loaded},
        failed_in={InstanceId(i): at for i, at in (failed or {}).items()},
        failures={InstanceId(i): "boom" for i in (failed or {})},
        last_unload_ms=last_unload_ms,
    )


PLANS = [
    (
        "claim here, nothing in the cache",
        rec(loaded=(ME,)),
        LocalCopy.NONE,
        [RepairKind.STALE_CLAIM],
    ),
    (
        "loading claim here, nothing local",
        rec(loading=(ME,)),
        LocalCopy.NONE,
        [RepairKind.STALE_CLAIM],
    ),
    ("claim here, loaded here", rec(loaded=(ME,)), LocalCopy.LOADED, []),
    ("claim here, loading here", rec(loading=(ME,)), LocalCopy.LOADING, []),
    ("claim here, being unloaded", rec(loaded=(ME,)), LocalCopy.UNLOADING, []),
    ("loaded here, no claim", rec(loaded=(B,)), LocalCopy.LOADED, [RepairKind.MISSING_CLAIM]),
    (
        "loaded here, claim says loading",
        rec(loading=(ME,)),
        LocalCopy.LOADED,
        [RepairKind.LOADED_STATE],
    ),
    ("a peer's claim is not ours to judge", rec(loaded=(B,)), LocalCopy.NONE, []),
    (
        "our failure expired",
        rec(failed={ME: NOW - EXPIRY - 1}),
        LocalCopy.NONE,
        [RepairKind.EXPIRED_FAILURE],
    ),
    ("our failure is recent", rec(failed={ME: NOW - 10}), LocalCopy.NONE, []),
    ("a peer's expired failure", rec(failed={B: NOW - EXPIRY - 1}), LocalCopy.NONE, []),
]


def plan_repairs(
    records: list[tuple[str, ModelRecord]], local: dict[str, LocalCopy]
) -> list[Repair]:
    """Both directions in one pass, as a small registry is planned."""
    repairs = claim_repairs(ME, records, local, now_ms=NOW, failure_expiry_ms=EXPIRY)
    return repairs + unregistered_copies(local, {model_id for model_id, _ in records})


@pytest.mark.parametrize(
    ("record", "local", "kinds"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS]
)
def test_plan_repairs(record: ModelRecord, local: LocalCopy, kinds: list[RepairKind]) -> None:
    locals_ = {"m": local} if local is not LocalCopy.NONE else {}
    repairs = plan_repairs([("m", record)], locals_)
    assert repairs == [Repair("m", k) for k in kinds]


def test_a_loaded_copy_of_an_unregistered_model_is_planned_for_removal() -> None:
    local = {"gone": LocalCopy.LOADED, "going": LocalCopy.UNLOADING}
    repairs = plan_repairs([], local)
    assert repairs == [Repair("gone", RepairKind.UNREGISTERED_COPY)]


def test_planning_in_parts_finds_what_one_pass_finds() -> None:
    """The healer plans a large registry in parts: claims per part, then unregistered
    copies; the parts find what one pass over all of it finds."""
    records = [(f"m{i}", rec(loaded=(ME,) if i % 3 else (), loading=(B,))) for i in range(10)]
    local = {f"m{i}": LocalCopy.LOADED for i in range(0, 12, 2)}  # m10: not registered
    whole = plan_repairs(records, local)
    parts = [records[:4], records[4:7], records[7:]]
    planned = [
        r
        for part in parts
        for r in claim_repairs(ME, part, local, now_ms=NOW, failure_expiry_ms=EXPIRY)
    ]
    planned += unregistered_copies(local, {model_id for model_id, _ in records})
    assert sorted(planned, key=str) == sorted(whole, key=str)
    assert Repair("m10", RepairKind.UNREGISTERED_COPY) in whole
    assert {r.kind for r in whole} >= {RepairKind.STALE_CLAIM, RepairKind.MISSING_CLAIM}


def _apply(kind: RepairKind, record: ModelRecord | None, local: LocalCopy) -> ModelRecord | None:
    return apply_repair(kind, record, ME, local, now_ms=NOW, failure_expiry_ms=EXPIRY)


def test_a_stale_claim_is_dropped_and_failures_are_kept() -> None:
    before = rec(loaded=(ME, B), failed={ME: NOW - 10})
    after = _apply(RepairKind.STALE_CLAIM, before, LocalCopy.NONE)
    assert after is not None
    assert set(after.instance_ids) == {B} and set(after.loaded_in) == {B}
    assert set(after.failed_in) == {ME}


def test_a_copy_the_runtime_lost_is_dropped_while_its_cleanup_runs() -> None:
    after = _apply(RepairKind.RUNTIME_LOST, rec(loaded=(ME, B)), LocalCopy.UNLOADING)
    assert after is not None and set(after.instance_ids) == {B}
    assert _apply(RepairKind.STALE_CLAIM, rec(loaded=(ME, B)), LocalCopy.UNLOADING) is None


@pytest.mark.parametrize(
    "kind", [RepairKind.STALE_CLAIM, RepairKind.STARTUP_CLAIM, RepairKind.RUNTIME_LOST]
)
def test_a_drop_is_not_written_once_a_load_here_started(kind: RepairKind) -> None:
    assert _apply(kind, rec(loading=(ME,)), LocalCopy.LOADING) is None
    assert _apply(kind, rec(loaded=(B,)), LocalCopy.NONE) is None
    assert _apply(kind, None, LocalCopy.NONE) is None


def test_a_missing_claim_is_added_as_loaded_only_while_loaded_here() -> None:
    after = _apply(RepairKind.MISSING_CLAIM, rec(loaded=(B,)), LocalCopy.LOADED)
    assert after is not None and set(after.loaded_in) == {ME, B}
    assert _apply(RepairKind.MISSING_CLAIM, rec(loaded=(B,)), LocalCopy.UNLOADING) is None
    assert _apply(RepairKind.LOADED_STATE, rec(loaded=(ME,)), LocalCopy.LOADED) is None


def test_an_expired_failure_is_cleared_but_a_recent_one_stays() -> None:
    after = _apply(RepairKind.EXPIRED_FAILURE, rec(failed={ME: NOW - EXPIRY}), LocalCopy.NONE)
    assert after is not None and not after.failed_in and not after.failures
    assert _apply(RepairKind.EXPIRED_FAILURE, rec(failed={ME: NOW - 1}), LocalCopy.NONE) is None


def test_a_peer_claim_is_dropped_only_if_unchanged_since_seen() -> None:
    record = rec(loaded=(ME, B))
    seen = record.instance_ids[InstanceId(B)]
    after = drop_peer_claim(record, B, seen, now_ms=NOW)
    assert after is not None and set(after.instance_ids) == {ME}
    assert after.last_unload_ms == NOW  # so the leader does not take it for a new model
    assert drop_peer_claim(record, B, seen + 1, now_ms=NOW) is None  # a new load since
    assert drop_peer_claim(rec(loaded=(ME,)), B, seen, now_ms=NOW) is None
    assert drop_peer_claim(None, B, seen, now_ms=NOW) is None


FIRST_LOADS = [
    ("new, loaded nowhere", rec(), True),
    ("copy on a live instance", rec(loaded=(B,)), False),
    ("loading on a live instance", rec(loading=(B,)), False),
    ("only a claim of a departed instance", rec(loaded=("gone",)), True),
    ("recent failure", rec(failed={B: NOW - 10}), False),
    ("failure expired: retried", rec(failed={B: NOW - EXPIRY - 1}, last_unload_ms=NOW - 5), True),
    ("evicted once: waits for a request", rec(last_unload_ms=NOW - 5), False),
]


@pytest.mark.parametrize(
    ("record", "want"), [f[1:] for f in FIRST_LOADS], ids=[f[0] for f in FIRST_LOADS]
)
def test_wants_first_load(record: ModelRecord, want: bool) -> None:
    got = wants_first_load(record, {ME, B}, now_ms=NOW, failure_expiry_ms=EXPIRY)
    assert got is want
