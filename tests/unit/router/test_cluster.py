"""The instance-table queries (mmesh.router.cluster) over plain tables: who is live, who
still serves, whether another instance drains, and record snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pytest

from mmesh.core.records import InstanceRecord, ModelRecord
from mmesh.router.cluster import ClusterView, records, serving

T = TypeVar("T")
ME = "a"


@dataclass(frozen=True)
class _Held(Generic[T]):
    record: T


@dataclass
class _Table(Generic[T]):
    items: dict[str, _Held[T]] = field(default_factory=dict)
    version: int = 0


@dataclass
class _Mirror:
    instances: _Table[InstanceRecord] = field(default_factory=_Table)


def _view(draining: dict[str, bool]) -> ClusterView:
    mirror = _Mirror()
    for iid, down in draining.items():
        mirror.instances.items[iid] = _Held(InstanceRecord(shutting_down=down))
    return ClusterView(mirror, ME)


def test_live_puts_this_instance_in_from_its_own_state_over_its_stale_record() -> None:
    view = _view({ME: False, "b": False})
    own = InstanceRecord(capacity_units=9, used_units=2)
    live = view.live(own)
    assert sorted(live) == [ME, "b"]
    assert live[ME].free_units == 7


def test_live_includes_this_instance_before_its_record_is_published() -> None:
    view = _view({"b": False})
    assert sorted(view.live(InstanceRecord())) == [ME, "b"]
    assert view.live_ids() == {ME, "b"}
    assert sorted(view.registered()) == ["b"]


@pytest.mark.parametrize(
    ("instance", "live"),
    [(ME, True), ("b", True), ("gone", False)],
)
def test_is_live(instance: str, live: bool) -> None:
    assert _view({"b": False}).is_live(instance) is live


@pytest.mark.parametrize(
    ("table", "others", "draining"),
    [
        ({ME: False, "b": False, "c": False}, ["b", "c"], False),
        ({ME: False, "b": True, "c": False}, ["c"], True),
        ({ME: True, "b": False}, ["b"], False),
        ({ME: False}, [], False),
    ],
)
def test_serving_others_and_other_draining(
    table: dict[str, bool], others: list[str], draining: bool
) -> None:
    view = _view(table)
    assert sorted(view.serving_others()) == others
    assert view.other_draining() is draining


def test_serving_drops_instances_shutting_down() -> None:
    table = {"a": InstanceRecord(), "b": InstanceRecord(shutting_down=True)}
    assert list(serving(table)) == ["a"]


def test_records_is_a_snapshot_that_survives_later_changes_to_the_table() -> None:
    table: _Table[ModelRecord] = _Table({"m1": _Held(ModelRecord(model_type="stub"))})
    snapshot = records(table)
    table.items["m2"] = _Held(ModelRecord(model_type="stub"))
    assert [m for m, _ in snapshot] == ["m1"]


def test_others_is_one_snapshot_per_change_of_the_table_and_leaves_this_instance_out() -> None:
    view = _view({ME: False, "b": False})
    first = view.others()
    assert list(first) == ["b"]
    assert view.others() is first  # nothing changed: the same snapshot, no copy per request
    view.mirror.instances.items["c"] = _Held(InstanceRecord(shutting_down=True))
    assert view.others() is first  # the table's version says when it changed
    view.mirror.instances.version += 1
    assert sorted(view.others()) == ["b", "c"]
    assert list(first) == ["b"]  # a request holding the old snapshot keeps it
