"""Pure: copies this router sent to peers lately, which their published records may not
show yet.

A peer publishes its instance record at most every 0.5 s, so right after this router places
a copy there, the peer's record can still show the free space and the idle loader it had.
Without this ledger, every miss in a burst would pick the same "emptiest" peer. A placement
counts on its peer

- as a load queued there while the call that asked for it has not answered, for at most
  `load_s` (after that the peer's own record shows its loads in progress);
- as a copy taking its units until the peer publishes a record after that answer (the
  record then holds the copy, or its failure), for at most `memory_s`.

Both end early for the reason that matters: a forwarded load that has answered has finished,
so the peer's loader is free again; counting it as queued after that made this router evict
its own models rather than use a peer with room (found by the mesh test whose fillers all
landed on one pod).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mmesh.core.records import InstanceRecord

LOAD_S = 0.75
"""At most how long a placement counts as a load queued on its peer."""
MEMORY_S = 2.0
"""At most how long a placement counts against its peer's free space."""


@dataclass(slots=True)
class Placement:
    instance_id: str
    units: int
    at: float
    has_answered: bool = False
    revision_at_answer: int | None = None
    """The peer's record revision when the call answered (None: no record then)."""

    def answered(self, revision: int | None) -> None:
        """The call that asked the peer to load has answered (a copy, or an error);
        `revision`: the peer's instance record revision in the mirror at that moment."""
        self.has_answered = True
        self.revision_at_answer = revision


class Placements:
    """This router's recent placements on peers, by peer."""

    def __init__(self, *, load_s: float = LOAD_S, memory_s: float = MEMORY_S) -> None:
        self.load_s, self.memory_s = load_s, memory_s
        self._by_peer: dict[str, list[Placement]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_peer)

    def note(self, instance_id: str, units: int, now: float) -> Placement:
        placement = Placement(instance_id, units, now)
        self._by_peer.setdefault(instance_id, []).append(placement)
        return placement

    def adjusted(
        self, instance_id: str, record: InstanceRecord, revision: int | None, now: float
    ) -> InstanceRecord:
        """The peer's record (at `revision` in the mirror) with the placements it does
        not show yet added."""
        pending = self._pending(instance_id, revision, now)
        if not pending:
            return record
        queued = sum(1 for p in pending if not p.has_answered and now - p.at < self.load_s)
        return dataclasses.replace(
            record,
            used_units=record.used_units + sum(p.units for p in pending),
            model_count=record.model_count + len(pending),
            loads_in_progress=record.loads_in_progress + queued,
        )

    def _pending(self, instance_id: str, revision: int | None, now: float) -> list[Placement]:
        placed = self._by_peer.get(instance_id)
        if not placed:
            return []
        pending = [p for p in placed if not self._shown(p, revision, now)]
        if pending:
            self._by_peer[instance_id] = pending
        else:
            del self._by_peer[instance_id]
        return pending

    def _shown(self, p: Placement, revision: int | None, now: float) -> bool:
        """Whether the peer's record shows the placement by now (or it is too old to
        matter)."""
        if now - p.at >= self.memory_s:
            return True
        if not p.has_answered or revision is None:
            return False
        return p.revision_at_answer is None or revision > p.revision_at_answer
