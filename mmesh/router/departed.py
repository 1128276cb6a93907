"""Peers that left lately, and the labels they had: a model whose every pod is restarting.

When every pod that may serve a model is down at once (each restarts), their instance records
go as their leases expire, and for a while no live instance has the model's labels. Placement
then finds nowhere to load ("no running instances that meet the label requirements"). That
is worth waiting for, within the request's deadline, while such pods left lately: they are
most likely restarting. `RecentDepartures`, a registry listener, remembers for `window_s`
which instances left and their labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mmesh.core.labels import satisfies
from mmesh.core.records import InstanceRecord, Table

WINDOW_S = 60.0
"""How long after an instance left a request still waits for one with its labels."""


class RecentDepartures:
    def __init__(
        self,
        instance: Callable[[str], InstanceRecord | None],
        known: dict[str, InstanceRecord],
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`instance`: a live instance's record from the mirror; `known`: the live ones now."""
        self._instance = instance
        self._labels = {iid: rec.labels for iid, rec in known.items()}
        self._left: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.window_s = window_s
        self._clock = clock

    def changed(self, table: Table, ident: str) -> None:
        """Registry listener: an instance record came, changed or went."""
        if table is not Table.INSTANCES:
            return
        record = self._instance(ident)
        if record is not None:
            self._labels[ident] = record.labels
            self._left.pop(ident, None)
            return
        labels = self._labels.pop(ident, None)
        if labels is not None:
            self._left[ident] = (self._clock(), labels)

    def left_lately(self, required: frozenset[str]) -> list[str]:
        """Instances with the `required` labels whose record went within the window."""
        cutoff = self._clock() - self.window_s
        for iid in [i for i, (at, _) in self._left.items() if at < cutoff]:
            del self._left[iid]
        return sorted(iid for iid, (_, labels) in self._left.items() if satisfies(labels, required))
