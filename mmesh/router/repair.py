"""Pure: how a router keeps the registry's picture of its own copies true.

The registry says which instance holds which copy; a router's cache says what its runtime
really holds. They drift apart when a router restarts under the same instance id (the
registry still claims its old copies), when the runtime restarts and loses its models, or
when a write was lost while etcd was away. Each router repairs its own entries:
`claim_repairs` (registry against cache, any part of the registry at a time) and
`unregistered_copies` (cache against registry) name each repair; the change
functions below apply one repair to the current record inside a compare-and-swap, checking
again that it is still needed. `wants_first_load` is the leader's rule for loading a new
InferenceService's model before any request arrives (the reference's `loadNow`).

A change function returns None when the record needs no write.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from mmesh.core.failures import is_live
from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router.routing import LocalCopy


class RepairKind(enum.StrEnum):
    """The `kind` label of `modelmesh_registry_repairs_total`."""

    STALE_CLAIM = "stale_claim"
    """The registry claims a copy here that this router does not hold."""
    PEER_STALE_CLAIM = "peer_stale_claim"
    """A peer the registry names as a holder answered that it holds no copy."""
    STARTUP_CLAIM = "startup_claim"
    """At start-up: a claim left by this instance id's previous life, not adopted."""
    ADOPTED = "adopted"
    """At start-up: a copy the runtime still held, taken back into the cache."""
    MISSING_CLAIM = "missing_claim"
    """This router holds a loaded copy the registry does not list here."""
    LOADED_STATE = "loaded_state"
    """This router's copy is loaded; the registry still says loading."""
    EXPIRED_FAILURE = "expired_failure"
    """This instance's load failure expired; the record is cleared of it."""
    UNREGISTERED_COPY = "unregistered_copy"
    """This router holds a copy of a model that is no longer registered."""
    RUNTIME_LOST = "runtime_lost"
    """The runtime no longer holds a copy this router had loaded."""


@dataclass(frozen=True, slots=True)
class Repair:
    model_id: str
    kind: RepairKind


_BACKED = frozenset({LocalCopy.LOADING, LocalCopy.LOADED, LocalCopy.UNLOADING})
_DROPS = frozenset(
    {
        RepairKind.STALE_CLAIM,
        RepairKind.PEER_STALE_CLAIM,
        RepairKind.STARTUP_CLAIM,
    }
)


def claim_repairs(
    me: str,
    records: Iterable[tuple[str, ModelRecord]],
    local: Mapping[str, LocalCopy],
    *,
    now_ms: int,
    failure_expiry_ms: int,
) -> list[Repair]:
    """The repairs of this instance's entries in these records (any part of the registry:
    each record is judged on its own)."""
    repairs: list[Repair] = []
    iid = InstanceId(me)
    for model_id, rec in records:
        copy = local.get(model_id, LocalCopy.NONE)
        if iid in rec.instance_ids and copy not in _BACKED:
            repairs.append(Repair(model_id, RepairKind.STALE_CLAIM))
        elif copy is LocalCopy.LOADED and iid not in rec.instance_ids:
            repairs.append(Repair(model_id, RepairKind.MISSING_CLAIM))
        elif copy is LocalCopy.LOADED and iid not in rec.loaded_in:
            repairs.append(Repair(model_id, RepairKind.LOADED_STATE))
        failed_ms = rec.failed_in.get(iid)
        if failed_ms is not None and not is_live(
            failed_ms, now_ms=now_ms, expiry_ms=failure_expiry_ms
        ):
            repairs.append(Repair(model_id, RepairKind.EXPIRED_FAILURE))
    return repairs


def unregistered_copies(local: Mapping[str, LocalCopy], registered: Container[str]) -> list[Repair]:
    """Loaded copies here of models the registry no longer has."""
    return [
        Repair(model_id, RepairKind.UNREGISTERED_COPY)
        for model_id, copy in sorted(local.items())
        if copy is LocalCopy.LOADED and model_id not in registered
    ]


def apply_repair(
    kind: RepairKind,
    rec: ModelRecord | None,
    me: str,
    local: LocalCopy,
    *,
    now_ms: int,
    failure_expiry_ms: int,
) -> ModelRecord | None:
    """The record after one repair of this instance's entry, judged on the current record
    and the current local state; None when nothing needs writing (any more)."""
    if rec is None:
        return None
    iid = InstanceId(me)
    if kind is RepairKind.RUNTIME_LOST:
        # The lost copy is being cleaned up (UNLOADING); only a new load keeps the claim.
        lost = iid in rec.instance_ids and local in (LocalCopy.NONE, LocalCopy.UNLOADING)
        return rec.without_copy(iid) if lost else None
    if kind in _DROPS:
        stale = iid in rec.instance_ids and local not in _BACKED
        return rec.without_copy(iid) if stale else None
    if kind in (RepairKind.MISSING_CLAIM, RepairKind.LOADED_STATE, RepairKind.ADOPTED):
        if local is not LocalCopy.LOADED or iid in rec.loaded_in:
            return None
        return rec.with_copy_loaded(iid, now_ms)
    if kind is RepairKind.EXPIRED_FAILURE:
        failed_ms = rec.failed_in.get(iid)
        if failed_ms is None or is_live(failed_ms, now_ms=now_ms, expiry_ms=failure_expiry_ms):
            return None
        return rec.without_failure(iid)
    return None


def drop_peer_claim(
    rec: ModelRecord | None, iid: str, seen_ms: int, *, now_ms: int
) -> ModelRecord | None:
    """Remove the claim of `iid` that answered "not held", unless it changed since it was
    seen (`seen_ms`, its load start): a newer claim is a new load, not the stale one. The
    copy most often went in an eviction whose own registry write comes later and will find
    nothing to do, so this write records the unload (`lul`) in its place."""
    if rec is None or rec.instance_ids.get(InstanceId(iid)) != seen_ms:
        return None
    return dataclasses.replace(
        rec.without_copy(InstanceId(iid)), last_unload_ms=max(rec.last_unload_ms, now_ms)
    )


def wants_first_load(
    rec: ModelRecord, live: Iterable[str], *, now_ms: int, failure_expiry_ms: int
) -> bool:
    """A model a vmodel serves (or moves to) that should be loaded now, with no request:
    it has no copy on a live instance and no live failure, and it was never unloaded (a
    new registration, or one whose copies were lost, not evicted) or its last load failed
    and that failure expired (the reference retries then)."""
    live_ids = set(live)
    if any(iid in live_ids for iid in rec.instance_ids):
        return False
    failures = list(rec.failed_in.values())
    if any(is_live(at, now_ms=now_ms, expiry_ms=failure_expiry_ms) for at in failures):
        return False
    return rec.last_unload_ms == 0 or bool(failures)
