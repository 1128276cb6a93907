"""Pure: where one inference request goes next.

`decide()` takes what this router knows at one moment (the model's record, the live
instance table, the state of this pod's own copy, the request's hop headers and the
instances this call has already failed on) and returns one small result: serve here,
forward to a peer's copy, wait for a load in progress, place a new copy, or refuse with a
reason. The shell (inference.py) acts on it and, when the attempt fails, decides again.

A copy claim in the record is a hint, not a fact. A claim on this instance that the local
cache cannot back (the router restarted, the runtime lost its models) is stale: `decide`
ignores it, and `stale_self_claim` tells the shell to remove it. A peer that answers "not
held" for a claimed copy gets its claim removed by the shell before the next decision, so
no claim of an instance that cannot answer for it ever blocks placement.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from mmesh.core.failures import failed_instances
from mmesh.core.ids import InstanceId
from mmesh.core.labels import required_labels, satisfies
from mmesh.core.records import InstanceRecord, ModelRecord
from mmesh.router.placement import (
    Peer,
    choose_copy,
    choose_loading_copy,
    choose_placement,
)


class LocalCopy(enum.StrEnum):
    """This pod's own copy of the model, as its cache and loader see it."""

    NONE = "none"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    """Being evicted or unloaded; a load after it waits for the unload to finish."""


@dataclass(frozen=True, slots=True)
class Hops:
    """The routing headers of a request (peers.py names them)."""

    forwarded: bool = False
    """A peer sent it (mm-hop > 0): serve it here or say why not; never forward again."""
    dest: str = ""
    """The instance the sender meant (mm-dest)."""
    load: bool = False
    """The sender placed a new copy here (mm-load): load it if there is none."""
    balanced: bool = False
    """The client balances itself (mm-balanced): a copy loading here is good enough."""
    exclude: frozenset[str] = frozenset()
    """Instances that failed this request already (mm-exclude)."""


@dataclass(frozen=True, slots=True)
class View:
    """The mesh as this router sees it now."""

    me: str
    peers: Mapping[str, InstanceRecord]
    """The other live instances (their lease holds)."""
    own: Callable[[], InstanceRecord]
    """This instance's record as it stands now. Asked only to place a copy or to explain a
    refusal: a request forwarded to a peer's copy never builds it."""
    local: LocalCopy
    size_units: int
    """What a new copy is assumed to take before its real size is known."""
    now_ms: int
    failure_expiry_ms: int
    inflight: Mapping[str, int] = field(default_factory=dict)
    """Requests this router has in flight to each peer now."""

    def instances(self) -> dict[str, InstanceRecord]:
        """Every live instance, this one included."""
        return {**self.peers, self.me: self.own()}


@dataclass(frozen=True, slots=True)
class ServeHere:
    """Serve from this pod's copy (waiting for its load, or loading it, as needed)."""


@dataclass(frozen=True, slots=True)
class ForwardTo:
    """Forward to a peer's loaded copy; the peer must not load one."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class WaitForLoad:
    """A load is under way on `instance_id` (maybe this one): wait for it there."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class PlaceAt:
    """No usable copy anywhere: load a new one on `instance_id` (maybe this one)."""

    instance_id: str


class RefuseKind(enum.StrEnum):
    NOT_HERE = "not-here"
    """A forwarded request reached an instance it was not meant for."""
    NOT_HELD = "not-held"
    """A forwarded request for a copy this instance does not hold (its claim is stale)."""
    NO_CAPACITY = "capacity"
    LOAD_FAILED = "load"


@dataclass(frozen=True, slots=True)
class Refuse:
    kind: RefuseKind
    reason: str


Decision = ServeHere | ForwardTo | WaitForLoad | PlaceAt | Refuse

_BACKED = frozenset({LocalCopy.LOADING, LocalCopy.LOADED, LocalCopy.UNLOADING})


def stale_self_claim(record: ModelRecord, me: str, local: LocalCopy) -> bool:
    """The record claims a copy on this instance that this instance does not have."""
    return me in record.instance_ids and local not in _BACKED


def decide(model_id: str, record: ModelRecord, view: View, hops: Hops) -> Decision:
    """Where the request for `model_id` goes next; see the module docstring."""
    if hops.forwarded:
        return decide_forwarded(model_id, view.me, view.local, hops)
    me, local, exclude = view.me, view.local, hops.exclude
    if me not in exclude and (
        local is LocalCopy.LOADED or (hops.balanced and local is LocalCopy.LOADING)
    ):
        return ServeHere()
    if stale_self_claim(record, me, local):
        record = record.without_copy(InstanceId(me))
    peers = view.peers
    target = choose_copy(record, peers, exclude=exclude, inflight=view.inflight)
    if target is not None:
        return ForwardTo(target)
    if local is LocalCopy.LOADING and me not in exclude:
        return WaitForLoad(me)
    if local is LocalCopy.UNLOADING and me not in exclude and me in record.instance_ids:
        # The registry still names this instance until the unload ends, so nobody else
        # would load it: wait for the unload here and load it again. (A copy retired by
        # scale-down left the registry first: the request goes to a remaining copy.)
        return ServeHere()
    loading = choose_loading_copy(record, peers, exclude=exclude)
    if loading is not None:
        return WaitForLoad(loading)
    return place(model_id, record, view, exclude)


def decide_forwarded(model_id: str, me: str, local: LocalCopy, hops: Hops) -> Decision:
    """A request a peer sent here: it needs only this pod's copy, never the mesh's view."""
    if hops.dest and hops.dest != me:
        return Refuse(RefuseKind.NOT_HERE, f"request for {hops.dest} reached {me}")
    if local in (LocalCopy.LOADED, LocalCopy.LOADING) or hops.load:
        return ServeHere()
    return Refuse(RefuseKind.NOT_HELD, f"model {model_id} is not loaded on {me}")


def place(
    model_id: str, record: ModelRecord, view: View, exclude: Collection[str]
) -> PlaceAt | Refuse:
    """Where a new copy goes: the best live instance that may load it, or why none may."""
    instances = view.instances()
    candidates = [Peer(iid, rec) for iid, rec in sorted(instances.items())]
    choice = choose_placement(
        record,
        candidates,
        size_units=view.size_units,
        exclude=exclude,
        now_ms=view.now_ms,
        failure_expiry_ms=view.failure_expiry_ms,
    )
    if isinstance(choice, str):
        return PlaceAt(choice)
    failures = load_failures(record, view)
    if failures:
        return load_failed(model_id, failures)
    return Refuse(
        RefuseKind.NO_CAPACITY,
        f"cannot load model {model_id}: {choice.reason} ({_census(record, instances, exclude)})",
    )


def load_failures(
    record: ModelRecord, view: View, seen: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Why the model failed to load, by instance: the record's failures that have not
    expired, and those a request saw itself (`seen`), which the mirrored record may not
    show yet."""
    failed = failed_instances(record, now_ms=view.now_ms, expiry_ms=view.failure_expiry_ms)
    failures = dict(seen or {})
    for iid in failed:
        failures[iid] = record.failures.get(InstanceId(iid), "load failed")
    return failures


def load_failed(model_id: str, failures: Mapping[str, str]) -> Refuse:
    """The refusal that names every instance where the model failed to load, and why."""
    messages = "; ".join(f"{iid}: {failures[iid]}" for iid in sorted(failures))
    return Refuse(RefuseKind.LOAD_FAILED, f"model {model_id} failed to load: {messages}")


def worth_waiting(record: ModelRecord, view: View, ruled_out: Collection[str]) -> bool:
    """After a "nowhere to load" refusal: could time alone lift it? Yes while some live
    instance with the model's labels is kept out only by something that passes (shutting
    down or restarting, a claim still being repaired, a transient failure of this request):
    not by a load failure of the model there nor a refusal of the load (`ruled_out`)."""
    required = required_labels(record.model_type)
    failed = failed_instances(record, now_ms=view.now_ms, expiry_ms=view.failure_expiry_ms)
    return any(
        satisfies(rec.labels, required) and iid not in failed and iid not in ruled_out
        for iid, rec in view.instances().items()
    )


def _census(
    record: ModelRecord, instances: Mapping[str, InstanceRecord], exclude: Collection[str]
) -> str:
    """The numbers behind a refusal: which live instances were ruled out and why."""
    live = sorted(instances)
    parts = [f"{len(live)} live instances"]
    for label, ids in (
        ("excluded after failing this request", [i for i in live if i in exclude]),
        ("shutting down", [i for i in live if instances[i].shutting_down]),
        ("holding a copy", [i for i in live if i in record.instance_ids]),
    ):
        if ids:
            parts.append(f"{label}: {', '.join(ids)}")
    return "; ".join(parts)
