"""Placement (mmesh.router.placement) as tables: which copy serves a request, which load to
wait for, and which instance loads a new copy, or why none can."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mmesh.core.ids import InstanceId
from mmesh.core.records import InstanceRecord, ModelRecord
from mmesh.router.placement import (
    Peer,
    PlacementRefusal,
    choose_copy,
    choose_loading_copy,
    choose_placement,
)

NOW = 1_700_000_000_000
EXPIRY = 900_000
SIZE = 10


def _model(
    *,
    loaded: tuple[str, ...] = (),
    loading: dict[str, int] | None = None,
    failed: dict[str, int] | None = None,
    model_type: str = "stub",
) -> ModelRecord:
    ids = {InstanceId(i): NOW - 1000 for i in loaded}
    ids.update({InstanceId(i): at for i, at in (loading or {}).items()})
    return ModelRecord(
        model_type=model_type,
        instance_ids=ids,
        loaded_in={InstanceId(i): NOW - 500 for i in loaded},
        failed_in={InstanceId(i): at for i, at in (failed or {}).items()},
        failures={InstanceId(i): f"boom on {i}" for i in (failed or {})},
    )


def _inst(
    *,
    free: int = 100,
    lru: int | None = None,
    count: int = 0,
    rpm: int = 0,
    zone: str = "",
    labels: tuple[str, ...] = (),
    down: bool = False,
    cold: bool = False,
) -> InstanceRecord:
    return InstanceRecord(
        capacity_units=100,
        used_units=100 - free,
        lru_time_ms=lru,
        model_count=count,
        rpm=rpm,
        zone=zone,
        labels=labels,
        shutting_down=down,
        cold=cold,
    )


# --- the hit path -----------------------------------------------------------------------


@dataclass(frozen=True)
class CopyCase:
    name: str
    record: ModelRecord
    peers: dict[str, InstanceRecord]
    want: str | None
    inflight: dict[str, int] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


COPY_CASES = [
    CopyCase("no copy", _model(), {"a": _inst()}, None),
    CopyCase("the only copy", _model(loaded=("b",)), {"a": _inst(), "b": _inst()}, "b"),
    CopyCase(
        "fewest in flight wins over a lower rate",
        _model(loaded=("a", "b")),
        {"a": _inst(rpm=1), "b": _inst(rpm=900)},
        "b",
        inflight={"a": 3, "b": 1},
    ),
    CopyCase(
        "equal in flight: the lower rate",
        _model(loaded=("a", "b")),
        {"a": _inst(rpm=50), "b": _inst(rpm=5)},
        "b",
    ),
    CopyCase(
        "all equal: the lowest id", _model(loaded=("c", "b")), {"b": _inst(), "c": _inst()}, "b"
    ),
    CopyCase(
        "a copy on an instance that is gone does not count",
        _model(loaded=("gone",)),
        {"a": _inst()},
        None,
    ),
    CopyCase(
        "an excluded holder is skipped",
        _model(loaded=("a", "b")),
        {"a": _inst(), "b": _inst()},
        "b",
        exclude=("a",),
    ),
    CopyCase(
        "a loading copy does not serve",
        _model(loading={"a": NOW}),
        {"a": _inst()},
        None,
    ),
]


@pytest.mark.parametrize("case", COPY_CASES, ids=lambda c: c.name)
def test_choose_copy(case: CopyCase) -> None:
    got = choose_copy(case.record, case.peers, exclude=case.exclude, inflight=case.inflight)
    assert got == case.want


@pytest.mark.parametrize(
    ("loading", "exclude", "want"),
    [
        ({}, (), None),
        ({"a": NOW - 10, "b": NOW - 90}, (), "b"),
        ({"a": NOW - 10, "b": NOW - 90}, ("b",), "a"),
        ({"gone": NOW - 90}, (), None),
    ],
    ids=["none loading", "the oldest load", "the oldest not excluded", "loader gone"],
)
def test_choose_loading_copy(
    loading: dict[str, int], exclude: tuple[str, ...], want: str | None
) -> None:
    peers = {"a": _inst(), "b": _inst()}
    assert choose_loading_copy(_model(loading=loading), peers, exclude=exclude) == want


# --- the miss path ----------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceCase:
    name: str
    peers: dict[str, InstanceRecord]
    want: str
    record: ModelRecord = field(default_factory=_model)
    exclude: tuple[str, ...] = ()


PLACE_CASES = [
    PlaceCase("room beats no room", {"a": _inst(free=5), "b": _inst(free=50)}, "b"),
    PlaceCase(
        "all full: the one whose least recently used model is oldest",
        {"a": _inst(free=0, lru=NOW - 10), "b": _inst(free=0, lru=NOW - 9000)},
        "b",
    ),
    PlaceCase(
        "room for both: fewer models first",
        {"a": _inst(free=90, count=3), "b": _inst(free=20, count=1)},
        "b",
    ),
    PlaceCase(
        "same model count: more free space",
        {"a": _inst(free=30, count=1), "b": _inst(free=60, count=1)},
        "b",
    ),
    PlaceCase(
        "a zone without a copy before the zone that has one",
        {
            "a": _inst(zone="z1"),
            "b": _inst(zone="z1", count=5, free=20),
            "c": _inst(zone="z2", count=5, free=20),
        },
        "c",
        record=_model(loaded=("a",)),
    ),
    PlaceCase(
        "not on an instance shutting down",
        {"a": _inst(down=True), "b": _inst(free=20, count=4)},
        "b",
    ),
    PlaceCase(
        "a warm instance before a cold one, even a full one that must evict",
        {"a": _inst(cold=True), "b": _inst(free=0, lru=NOW - 10, count=9)},
        "b",
    ),
    PlaceCase(
        "every instance cold: ranked as if all were warm",
        {"a": _inst(cold=True, free=5), "b": _inst(cold=True, free=50)},
        "b",
    ),
    PlaceCase(
        "a cold instance when the warm one is ruled out",
        {"a": _inst(cold=True), "b": _inst()},
        "a",
        exclude=("b",),
    ),
    PlaceCase("not where excluded", {"a": _inst(), "b": _inst(count=4)}, "b", exclude=("a",)),
    PlaceCase(
        "not where it failed recently",
        {"a": _inst(), "b": _inst(count=4)},
        "b",
        record=_model(failed={"a": NOW - 1000}),
    ),
    PlaceCase(
        "again where the failure expired",
        {"a": _inst(), "b": _inst(count=4)},
        "a",
        record=_model(failed={"a": NOW - EXPIRY - 1}),
    ),
    PlaceCase(
        "only where the labels the model type asks for are",
        {"a": _inst(labels=("mt:onnx",)), "b": _inst(count=4, labels=("mt:sklearn",))},
        "b",
        record=_model(model_type="mt:sklearn"),
    ),
]


@pytest.mark.parametrize("case", PLACE_CASES, ids=lambda c: c.name)
def test_choose_placement(case: PlaceCase) -> None:
    peers = [Peer(iid, rec) for iid, rec in sorted(case.peers.items())]
    got = choose_placement(
        case.record,
        peers,
        size_units=SIZE,
        exclude=case.exclude,
        now_ms=NOW,
        failure_expiry_ms=EXPIRY,
    )
    assert got == case.want


def test_no_instance_with_the_labels_names_the_type_and_the_labels() -> None:
    got = choose_placement(
        _model(model_type="mt:triton|pv:grpc-v2"),
        [Peer("a", _inst(labels=("mt:sklearn",)))],
        size_units=SIZE,
        exclude=(),
        now_ms=NOW,
        failure_expiry_ms=EXPIRY,
    )
    assert got == PlacementRefusal(
        "There are no running instances that meet the label requirements of type "
        "mt:triton|pv:grpc-v2: ['mt:triton', 'pv:grpc-v2']"
    )


def test_every_candidate_ruled_out_says_why_in_general_terms() -> None:
    got = choose_placement(
        _model(loaded=("a",), failed={"b": NOW - 1}),
        [Peer("a", _inst()), Peer("b", _inst()), Peer("c", _inst(down=True))],
        size_units=SIZE,
        exclude=(),
        now_ms=NOW,
        failure_expiry_ms=EXPIRY,
    )
    assert isinstance(got, PlacementRefusal)
    assert got.reason.startswith("Nowhere available to load")
