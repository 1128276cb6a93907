"""Pure: the questions the router asks of the registry mirror's tables, asked in one place.

Which instances are live (their lease holds, so their record is in the mirror), which of
them still serve (not shutting down), whether another one is draining; and snapshots of a
table's records that stay valid across awaits while the watch keeps changing the mirror.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

from mmesh.core.records import InstanceRecord

R_co = TypeVar("R_co", covariant=True)


class Held(Protocol[R_co]):
    """One mirror entry (the registry's `Versioned`)."""

    @property
    def record(self) -> R_co: ...


class Table(Protocol[R_co]):
    """One mirror table (the registry's `MirrorTable`)."""

    @property
    def items(self) -> Mapping[str, Held[R_co]]: ...

    @property
    def version(self) -> int:
        """Changes whenever `items` does."""
        ...


class Mirror(Protocol):
    """The registry mirror (the router's `Registry`), as far as the view reads it."""

    @property
    def instances(self) -> Table[InstanceRecord]: ...


T = TypeVar("T")


def records(table: Table[T]) -> list[tuple[str, T]]:
    """A snapshot of a table's (id, record) pairs, safe to iterate across awaits."""
    return [(ident, held.record) for ident, held in list(table.items.items())]


def serving(instances: Mapping[str, InstanceRecord]) -> dict[str, InstanceRecord]:
    """The instances that take new copies and requests: not shutting down."""
    return {iid: rec for iid, rec in instances.items() if not rec.shutting_down}


class ClusterView:
    """The instance table as this router sees it."""

    def __init__(self, mirror: Mirror, me: str) -> None:
        self.mirror = mirror
        self.me = me
        self._others: Mapping[str, InstanceRecord] = {}
        self._others_version = -1

    def registered(self) -> dict[str, InstanceRecord]:
        """Instances with a live record in the mirror (this one's may lag its own state)."""
        return dict(records(self.mirror.instances))

    def others(self) -> Mapping[str, InstanceRecord]:
        """The other live instances: one snapshot per change of the instance table, shared
        by the requests routed meanwhile (read it, never change it)."""
        table = self.mirror.instances
        if table.version != self._others_version:
            self._others = {iid: rec for iid, rec in records(table) if iid != self.me}
            self._others_version = table.version
        return self._others

    def live(self, own: InstanceRecord) -> dict[str, InstanceRecord]:
        """Every live instance, this one from its own current state `own`."""
        live = self.registered()
        live[self.me] = own
        return live

    def live_ids(self) -> set[str]:
        return {*self.mirror.instances.items, self.me}

    def is_live(self, instance_id: str) -> bool:
        return instance_id == self.me or instance_id in self.mirror.instances.items

    def serving_others(self) -> list[str]:
        """Other instances that still take copies (not shutting down)."""
        return [iid for iid in serving(self.registered()) if iid != self.me]

    def other_draining(self) -> bool:
        """Whether another instance is shutting down."""
        return any(
            held.record.shutting_down
            for iid, held in self.mirror.instances.items.items()
            if iid != self.me
        )
