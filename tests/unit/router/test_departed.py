"""Peers that left lately and their labels (mmesh.router.departed), on a fake mirror and clock."""

from __future__ import annotations

from mmesh.core.records import InstanceRecord, Table
from mmesh.router.departed import RecentDepartures

SMALL = InstanceRecord(labels=("mt:sklearn", "rt:small"))
OTHER = InstanceRecord(labels=("mt:onnx", "rt:triton"))


class Mirror:
    def __init__(self, **live: InstanceRecord) -> None:
        self.live = dict(live)

    def get(self, iid: str) -> InstanceRecord | None:
        return self.live.get(iid)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def departures(mirror: Mirror, clock: Clock) -> RecentDepartures:
    return RecentDepartures(mirror.get, dict(mirror.live), window_s=60, clock=clock)


def test_an_instance_that_left_counts_for_its_labels_within_the_window() -> None:
    mirror, clock = Mirror(a=SMALL, b=OTHER), Clock()
    left = departures(mirror, clock)
    del mirror.live["a"]
    left.changed(Table.INSTANCES, "a")

    assert left.left_lately(frozenset({"rt:small"})) == ["a"]
    assert left.left_lately(frozenset({"rt:triton"})) == []
    assert left.left_lately(frozenset()) == ["a"]  # a model that asks for no labels
    clock.now += 61
    assert left.left_lately(frozenset({"rt:small"})) == []


def test_an_instance_back_under_its_id_no_longer_counts() -> None:
    mirror, clock = Mirror(a=SMALL), Clock()
    left = departures(mirror, clock)
    del mirror.live["a"]
    left.changed(Table.INSTANCES, "a")
    mirror.live["a"] = SMALL
    left.changed(Table.INSTANCES, "a")

    assert left.left_lately(frozenset({"rt:small"})) == []


def test_an_instance_that_joined_after_the_start_is_remembered_too() -> None:
    mirror, clock = Mirror(), Clock()
    left = departures(mirror, clock)
    mirror.live["c"] = SMALL
    left.changed(Table.INSTANCES, "c")
    left.changed(Table.REGISTRY, "some-model")  # other tables are not its business
    del mirror.live["c"]
    left.changed(Table.INSTANCES, "c")

    assert left.left_lately(frozenset({"mt:sklearn"})) == ["c"]


def test_an_id_it_never_saw_live_is_no_departure() -> None:
    mirror, clock = Mirror(), Clock()
    left = departures(mirror, clock)
    left.changed(Table.INSTANCES, "ghost")

    assert left.left_lately(frozenset()) == []
