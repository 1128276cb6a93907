"""The routing decision (mmesh.router.routing) as tables: records, instance tables, the
local copy and the hop headers in; serve here / forward / wait / place / refuse out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from mmesh.core.ids import InstanceId
from mmesh.core.records import InstanceRecord, ModelRecord
from mmesh.router.routing import (
    Decision,
    ForwardTo,
    Hops,
    LocalCopy,
    PlaceAt,
    Refuse,
    RefuseKind,
    ServeHere,
    View,
    WaitForLoad,
    decide,
    load_failed,
    load_failures,
    stale_self_claim,
    worth_waiting,
)

NOW = 1_700_000_000_000
EXPIRY = 900_000
ME, B, C = "a", "b", "c"
ROOMY = InstanceRecord(capacity_units=1000, endpoint="x")


def rec(
    loaded: tuple[str, ...] = (),
    loading: tuple[str, ...] = (),
    failed: dict[str, int] | None = None,
    model_type: str = "stub",
) -> ModelRecord:
    ids = {InstanceId(i): NOW - 1000 for i in (*loaded, *loading)}
    return ModelRecord(
        model_type=model_type,
        instance_ids=ids,
        loaded_in={InstanceId(i): NOW - 500 for i in loaded},
        failed_in={InstanceId(i): at for i, at in (failed or {}).items()},
        failures={InstanceId(i): f"boom on {i}" for i in (failed or {})},
    )


@dataclass(frozen=True)
class Case:
    name: str
    record: ModelRecord
    want: Decision
    local: LocalCopy = LocalCopy.NONE
    hops: Hops = field(default_factory=Hops)
    instances: dict[str, InstanceRecord] = field(
        default_factory=lambda: {ME: ROOMY, B: ROOMY, C: ROOMY}
    )
    inflight: dict[str, int] = field(default_factory=dict)


FULL = InstanceRecord(capacity_units=10, used_units=10, lru_time_ms=NOW - 60_000, model_count=1)
DRAINING = InstanceRecord(capacity_units=1000, shutting_down=True)

CASES = [
    # --- requests from clients (no hop) ---
    Case("loaded here: serve", rec(loaded=(ME, B)), ServeHere(), local=LocalCopy.LOADED),
    Case("loaded on a peer: forward", rec(loaded=(B,)), ForwardTo(B)),
    Case(
        "two peer copies: the less busy one",
        rec(loaded=(B, C)),
        ForwardTo(C),
        inflight={B: 3, C: 1},
    ),
    Case(
        "loading here, loaded on a peer: forward to the loaded copy",
        rec(loaded=(B,), loading=(ME,)),
        ForwardTo(B),
        local=LocalCopy.LOADING,
    ),
    Case(
        "balanced client, loading here: serve here",
        rec(loaded=(B,), loading=(ME,)),
        ServeHere(),
        local=LocalCopy.LOADING,
        hops=Hops(balanced=True),
    ),
    Case("loading here only: wait here", rec(loading=(ME,)), WaitForLoad(ME), LocalCopy.LOADING),
    Case("loading on a peer: wait there", rec(loading=(B,)), WaitForLoad(B)),
    Case("nowhere: place on the best instance", rec(), PlaceAt(ME)),
    Case(
        "unloading here and nowhere else: wait for the unload and reload here",
        rec(loaded=(ME,)),
        ServeHere(),
        local=LocalCopy.UNLOADING,
    ),
    Case(
        "unloading here, loaded on a peer: forward",
        rec(loaded=(ME, B)),
        ForwardTo(B),
        local=LocalCopy.UNLOADING,
    ),
    # --- stale claims ---
    Case(
        "claim on self not in cache, nowhere else: place (here), not 'nowhere available'",
        rec(loaded=(ME,)),
        PlaceAt(ME),
        instances={ME: ROOMY},
    ),
    Case(
        "claim on self not in cache, copy on a peer: forward to the peer",
        rec(loaded=(ME, B)),
        ForwardTo(B),
    ),
    Case(
        "all claims stale (self and both peers excluded after 'not held'): place here",
        rec(loaded=(ME, B, C)),
        PlaceAt(ME),
        hops=Hops(exclude=frozenset({B, C})),
    ),
    Case(
        "the double restart: claims on self and the peer, peer excluded: place here",
        rec(loaded=(ME, B)),
        PlaceAt(ME),
        instances={ME: ROOMY, B: ROOMY},
        hops=Hops(exclude=frozenset({B})),
    ),
    Case(
        "claim on a departed instance: place, the claim does not block",
        rec(loaded=("gone",)),
        PlaceAt(ME),
    ),
    # --- exclusions, shutdown, failures, capacity ---
    Case(
        "excluded here: place on a peer",
        rec(),
        PlaceAt(B),
        hops=Hops(exclude=frozenset({ME})),
    ),
    Case(
        "the copy's instance is excluded: place elsewhere",
        rec(loaded=(B,)),
        PlaceAt(ME),
        hops=Hops(exclude=frozenset({B})),
    ),
    Case(
        "shutting-down instances are never placed on",
        rec(),
        PlaceAt(C),
        instances={ME: DRAINING, B: DRAINING, C: ROOMY},
    ),
    Case(
        "a copy on a shutting-down instance still serves",
        rec(loaded=(B,)),
        ForwardTo(B),
        instances={ME: ROOMY, B: DRAINING},
    ),
    Case(
        "full instances: the one with the oldest LRU model",
        rec(),
        PlaceAt(B),
        instances={
            ME: FULL,
            B: InstanceRecord(
                capacity_units=10, used_units=10, lru_time_ms=NOW - 3_600_000, model_count=1
            ),
        },
    ),
    Case(
        "failed here recently: place on a peer",
        rec(failed={ME: NOW - 1000}),
        PlaceAt(B),
    ),
    Case(
        "an expired failure does not count",
        rec(failed={ME: NOW - EXPIRY - 1}),
        PlaceAt(ME),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decide(case: Case) -> None:
    view = _view_of(case.instances, case.local, case.inflight)
    assert decide("m", case.record, view, case.hops) == case.want


def _view_of(
    instances: Mapping[str, InstanceRecord],
    local: LocalCopy = LocalCopy.NONE,
    inflight: Mapping[str, int] | None = None,
) -> View:
    """The view of instance ME among `instances` (its own record included, if it is there)."""
    own = instances.get(ME, InstanceRecord())
    return View(
        me=ME,
        peers={iid: rec for iid, rec in instances.items() if iid != ME},
        own=lambda: own,
        local=local,
        size_units=100,
        now_ms=NOW,
        failure_expiry_ms=EXPIRY,
        inflight=inflight or {},
    )


def _view(local: LocalCopy = LocalCopy.NONE, **instances: InstanceRecord) -> View:
    return _view_of(instances or {ME: ROOMY, B: ROOMY}, local)


def test_forwarding_to_a_peer_copy_never_builds_this_instance_record() -> None:
    def own() -> InstanceRecord:
        raise AssertionError("own record built for a forward")

    view = View(me=ME, peers={B: ROOMY}, own=own, local=LocalCopy.NONE, size_units=100,
                now_ms=NOW, failure_expiry_ms=EXPIRY)  # fmt: skip
    assert decide("m", rec(loaded=(B,)), view, Hops()) == ForwardTo(B)
    with pytest.raises(AssertionError, match="own record"):
        decide("m", rec(), view, Hops())  # placing a copy weighs this instance too


def test_failed_everywhere_refuses_with_each_failure_message() -> None:
    decision = decide("m", rec(failed={ME: NOW - 10, B: NOW - 20}), _view(), Hops())
    assert decision == Refuse(
        RefuseKind.LOAD_FAILED, "model m failed to load: a: boom on a; b: boom on b"
    )


def test_load_failures_add_what_the_request_saw_that_the_record_does_not_show() -> None:
    record = rec(failed={ME: NOW - 10, B: NOW - EXPIRY - 1})
    seen = {C: "boom seen on c", ME: "older words for a"}
    failures = load_failures(record, _view(), seen)
    assert failures == {ME: "boom on a", C: "boom seen on c"}  # b's failure has expired
    assert load_failed("m", failures) == Refuse(
        RefuseKind.LOAD_FAILED, "model m failed to load: a: boom on a; c: boom seen on c"
    )


def test_nowhere_available_names_the_instances_and_why() -> None:
    decision = decide("m", rec(loaded=(B,)), _view(), Hops(exclude=frozenset({ME, B})))
    assert isinstance(decision, Refuse)
    assert decision.kind is RefuseKind.NO_CAPACITY
    assert "Nowhere available to load" in decision.reason
    assert "2 live instances; excluded after failing this request: a, b" in decision.reason
    assert "holding a copy: b" in decision.reason


WAITING = [
    ("excluded after a transient failure: wait", rec(), {}, (ME, B), set(), True),
    ("shutting down (a restart in turn): wait", rec(), {B: True}, (ME,), set(), True),
    ("every instance refused the load: do not wait", rec(), {}, (ME, B), {ME, B}, False),
    ("failed everywhere: do not wait", rec(failed={ME: NOW, B: NOW}), {}, (), set(), False),
    ("one refused, one restarting: wait", rec(), {B: True}, (ME,), {ME}, True),
    ("no instance has the labels: do not wait", rec(model_type="mt:onnx"), {}, (), set(), False),
]


@pytest.mark.parametrize(
    ("record", "shutting", "exclude", "ruled_out", "want"),
    [case[1:] for case in WAITING],
    ids=[case[0] for case in WAITING],
)
def test_worth_waiting_after_nowhere_to_load(
    record: ModelRecord,
    shutting: dict[str, bool],
    exclude: tuple[str, ...],
    ruled_out: set[str],
    want: bool,
) -> None:
    instances = {
        iid: InstanceRecord(
            capacity_units=1000, endpoint="x", shutting_down=shutting.get(iid, False)
        )
        for iid in (ME, B)
    }
    view = _view(**instances)
    decision = decide("m", record, view, Hops(exclude=frozenset(exclude)))
    assert isinstance(decision, Refuse)
    assert worth_waiting(record, view, ruled_out) is want


def test_no_instance_with_the_labels_refuses() -> None:
    decision = decide("m", rec(model_type="mt:onnx"), _view(), Hops())
    assert isinstance(decision, Refuse)
    assert decision.kind is RefuseKind.NO_CAPACITY
    assert "no running instances that meet the label requirements" in decision.reason


# --- forwarded requests (a peer sent them) ---

FORWARDED = [
    ("loaded here: serve", LocalCopy.LOADED, Hops(forwarded=True, dest=ME), ServeHere()),
    ("loading here: wait here", LocalCopy.LOADING, Hops(forwarded=True, dest=ME), ServeHere()),
    (
        "placed here (load): load and serve",
        LocalCopy.NONE,
        Hops(forwarded=True, dest=ME, load=True),
        ServeHere(),
    ),
    (
        "claimed here but not held: 'not held', never forwarded on",
        LocalCopy.NONE,
        Hops(forwarded=True, dest=ME),
        Refuse(RefuseKind.NOT_HELD, "model m is not loaded on a"),
    ),
    (
        "being unloaded here: 'not held'",
        LocalCopy.UNLOADING,
        Hops(forwarded=True, dest=ME),
        Refuse(RefuseKind.NOT_HELD, "model m is not loaded on a"),
    ),
    (
        "meant for another instance: 'not here'",
        LocalCopy.LOADED,
        Hops(forwarded=True, dest=B, load=True),
        Refuse(RefuseKind.NOT_HERE, "request for b reached a"),
    ),
]


@pytest.mark.parametrize(
    ("local", "hops", "want"), [f[1:] for f in FORWARDED], ids=[f[0] for f in FORWARDED]
)
def test_decide_forwarded(local: LocalCopy, hops: Hops, want: Decision) -> None:
    assert decide("m", rec(loaded=(ME,)), _view(local), hops) == want


@pytest.mark.parametrize(
    ("local", "claimed", "stale"),
    [
        (LocalCopy.NONE, True, True),
        (LocalCopy.LOADED, True, False),
        (LocalCopy.LOADING, True, False),
        (LocalCopy.UNLOADING, True, False),
        (LocalCopy.NONE, False, False),
    ],
)
def test_stale_self_claim(local: LocalCopy, claimed: bool, stale: bool) -> None:
    record = rec(loaded=(ME,) if claimed else (B,))
    assert stale_self_claim(record, ME, local) is stale
