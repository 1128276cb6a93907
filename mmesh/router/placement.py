"""Pure: where in the mesh a request goes, and where a new copy of a model is loaded.

Hit path: among live instances holding a loaded copy, the least busy one (fewest requests
this router has in flight to it, then the lowest request rate). Miss path: among live
instances that satisfy the model's label constraints and are not shutting down, excluded
or failed for the model: a zone that holds no copy yet before one that does; then one whose
model server is warm (a `cold` one, just started, may take many times longer over its first
load, and warms itself with a trial load meanwhile); then the one where the load starts
soonest (fewest waves of loads queued ahead of it: loads in progress
over loading threads); then one with room; when every candidate is full, the one whose next
victim is worth least (`lruTime`: its least recently used model, or under the value policy
its least valuable one, as an equivalent last use), so the mesh evicts its globally least
valuable copy; then fewer models, more free space, fewer loads in progress, lower rate.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mmesh.core.failures import failed_instances
from mmesh.core.labels import required_labels, satisfies
from mmesh.core.records import CopyState, InstanceRecord, ModelRecord


@dataclass(frozen=True, slots=True)
class Peer:
    """One live instance as placement sees it."""

    instance_id: str
    record: InstanceRecord


def choose_copy(
    record: ModelRecord,
    peers: Mapping[str, InstanceRecord],
    *,
    exclude: Collection[str],
    inflight: Mapping[str, int],
) -> str | None:
    """The instance to forward a request to, among those with a loaded copy."""
    holders = [
        iid for iid in record.instances_in(CopyState.LOADED) if iid in peers and iid not in exclude
    ]
    if not holders:
        return None
    return min(holders, key=lambda iid: (inflight.get(iid, 0), peers[iid].rpm, iid))


def choose_loading_copy(
    record: ModelRecord, peers: Mapping[str, InstanceRecord], *, exclude: Collection[str]
) -> str | None:
    """An instance already loading the model (the oldest load), to wait there."""
    loading = [
        iid for iid in record.instances_in(CopyState.LOADING) if iid in peers and iid not in exclude
    ]
    return min(loading, key=lambda iid: (record.instance_ids[iid], iid)) if loading else None


@dataclass(frozen=True, slots=True)
class PlacementRefusal:
    reason: str


def choose_placement(
    record: ModelRecord,
    peers: Sequence[Peer],
    *,
    size_units: int,
    exclude: Collection[str],
    now_ms: int,
    failure_expiry_ms: int,
) -> str | PlacementRefusal:
    """The instance that should load a new copy of the model."""
    required = required_labels(record.model_type)
    failed = failed_instances(record, now_ms=now_ms, expiry_ms=failure_expiry_ms)
    holding = set(record.instance_ids)
    fitting = [p for p in peers if satisfies(p.record.labels, required)]
    if not fitting:
        return PlacementRefusal(
            f"There are no running instances that meet the label requirements of type "
            f"{record.model_type}: {sorted(required)}"
        )
    usable = [
        p
        for p in fitting
        if not p.record.shutting_down
        and p.instance_id not in exclude
        and p.instance_id not in failed
        and p.instance_id not in holding
    ]
    if not usable:
        return PlacementRefusal(
            "Nowhere available to load: every candidate instance is "
            "excluded, shutting down, failed or already holds the model"
        )
    copy_zones = {p.record.zone for p in peers if p.instance_id in holding and p.record.zone}
    return min(usable, key=lambda p: _rank(p.record, size_units, copy_zones)).instance_id


def load_waves(rec: InstanceRecord) -> int:
    """Rounds of loads ahead of a new one on this instance (0: it starts at once)."""
    return rec.loads_in_progress // max(1, rec.loading_threads)


def _rank(
    rec: InstanceRecord, size_units: int, copy_zones: set[str]
) -> tuple[int, int, int, int, int, int, int, int, int]:
    full = rec.free_units < size_units
    lru = rec.lru_time_ms if rec.lru_time_ms is not None else 0
    return (
        int(bool(rec.zone) and rec.zone in copy_zones),
        int(rec.cold),
        load_waves(rec),
        int(full),
        lru if full else 0,
        rec.model_count,
        -rec.free_units,
        rec.loads_in_progress,
        rec.rpm,
    )
