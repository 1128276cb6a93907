"""Pure: how many copies of a model the mesh keeps beyond the first: scale-up by request
rate, scale-down of idle extra copies, and which local copies are a model's minimum copies.

Rules (reference §4.8; every window is a setting, see `CopyPolicy`):

- Scale-up: a copy serving more than `scaleup_rpm` requests/min asks for another copy.
- Scale-down: each pod judges its own LOADED copies and drops one when all of these hold:
  * the mesh is nearly full: free space is at most `max_free_fraction` of its capacity
    (reference: the janitor only scales down at >= 95 % full);
  * the model keeps at least max(1, min_copies) other live loaded copies;
  * no copy of the model started loading within `settle_ms` (reference: 30 min) and none
    was removed within `unload_gap_ms` (80 s);
  * the copy is idle: unused here for `idle_ms` = 10 % of the cache age, clamped to
    [`steady_gap_ms`, `idle_max_ms`] (reference: 10 % of the cache age, at most 10 h);
    for the last extra copy (2 -> 1) the model must be idle everywhere: its registry last
    use (`lu`, which holders refresh through `last_use_to_publish` once it is a quarter
    window stale) must be older than 1.25 windows;
  * the remaining holders stay under 2/3 of the scale-up rate even if one of them takes
    all of this copy's traffic: rpm of the busiest remaining holder (its whole pod's rate,
    an upper bound of its share) + this copy's rpm <= 2/3 x scaleup_rpm.
  At most `per_run_fraction` of this pod's capacity (at least one copy) goes per run.

Hysteresis: after a removal every remaining copy serves at most 2/3 x scaleup_rpm, below
the scale-up trigger, so a removal never causes a scale-up; and a scale-up blocks every
removal of that model for `settle_ms`. A rate sitting exactly at the threshold moves
neither way. The idle floor `steady_gap_ms` is the second-copy rule's gap: a model idle
that long has no steady use left that would ask for its second copy again.

Callers: `janitor.Janitor` (scale-up in the rate check, scale-down on its own period) and
the router's cache wiring (`is_min_copy`, so eviction skips a model's minimum copies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord

SCALE_DOWN_RATE_FRACTION = 2 / 3
"""A copy is removed only if the copies left stay under this share of the scale-up rate."""
IDLE_CACHE_AGE_FRACTION = 0.10
"""A copy is idle once unused for this share of the cache age (within the clamps)."""
LAST_USE_REFRESH_FRACTION = 0.25
"""A holder republishes the model's last use once it is this share of `idle_ms` stale."""


@dataclass(frozen=True, slots=True)
class CopyPolicy:
    """When copies are added and removed; all times in ms."""

    scaleup_rpm: int
    """Requests/min on one copy above which another copy is added."""
    idle_max_ms: int = 36_000_000
    """Longest a copy must be unused before it may go (reference: 10 h)."""
    steady_gap_ms: int = 2_400_000
    """Shortest: the second-copy rule's pause that ends "steady use" (40 min)."""
    settle_ms: int = 1_800_000
    """No copy of a model goes this soon after one of its copies started loading."""
    unload_gap_ms: int = 80_000
    """No copy of a model goes this soon after another of its copies went."""
    max_free_fraction: float = 0.05
    """Scale-down only runs while the mesh's free space is at most this share (1: always)."""
    per_run_fraction: float = 0.05
    """Share of this pod's capacity one scale-down run may free (at least one copy)."""

    def __post_init__(self) -> None:
        if self.scaleup_rpm <= 0:
            raise ValueError(f"scaleup_rpm must be positive, got {self.scaleup_rpm}")
        if not 0 <= self.max_free_fraction <= 1:
            raise ValueError(f"max_free_fraction must be within [0, 1]: {self.max_free_fraction}")
        if self.idle_max_ms < 0 or self.steady_gap_ms < 0:
            raise ValueError("idle windows must not be negative")


@dataclass(frozen=True, slots=True)
class LocalCopy:
    """One LOADED copy on this pod."""

    model_id: str
    units: int
    last_used_ms: int
    """Last request served from this copy (epoch ms)."""
    rpm: int = 0
    """Requests/min this copy served in the last rate window."""


@dataclass(frozen=True, slots=True)
class MeshView:
    """What the pod knows of the mesh when it judges its copies."""

    instance_id: str
    live_rpm: Mapping[str, int]
    """Live instances that are not shutting down -> their request rate (req/min)."""
    free_fraction: float
    """Free units / capacity units over those instances."""
    cache_age_ms: int
    """now - the oldest last use of any loaded model in the mesh (the global LRU age)."""
    now_ms: int


def wants_another_copy(rpm: int, threshold_rpm: int) -> bool:
    """Scale-up: a copy above the threshold (strictly: a rate at it is no reason)."""
    return rpm > threshold_rpm


def idle_ms(cache_age_ms: int, policy: CopyPolicy) -> int:
    """How long a copy must be unused before it may go."""
    share = int(cache_age_ms * IDLE_CACHE_AGE_FRACTION)
    return max(policy.steady_gap_ms, min(share, policy.idle_max_ms))


def _other_holders(record: ModelRecord, mesh: MeshView) -> list[str]:
    me = mesh.instance_id
    return [i for i in record.loaded_in if i != me and i in mesh.live_rpm]


def keep_reason(
    copy: LocalCopy, record: ModelRecord, mesh: MeshView, policy: CopyPolicy
) -> str | None:
    """Why this pod keeps its copy of the model; None when it may remove it."""
    others = _other_holders(record, mesh)
    floor = max(1, record.min_copies)
    if len(others) < floor:
        return (
            f"{len(others) + 1} live loaded copies; dropping one needs {floor + 1} "
            f"(min copies {record.min_copies})"
        )
    if mesh.free_fraction > policy.max_free_fraction:
        return (
            f"mesh {mesh.free_fraction:.0%} free, scale-down waits for "
            f"{policy.max_free_fraction:.0%} or less"
        )
    now = mesh.now_ms
    newest_load = max(record.instance_ids.values(), default=0)
    if now - newest_load < policy.settle_ms:
        return f"a copy started loading {now - newest_load} ms ago (settle {policy.settle_ms} ms)"
    if now - record.last_unload_ms < policy.unload_gap_ms:
        gap = now - record.last_unload_ms
        return f"a copy was removed {gap} ms ago (gap {policy.unload_gap_ms} ms)"
    window = idle_ms(mesh.cache_age_ms, policy)
    if now - copy.last_used_ms < window:
        return f"used {now - copy.last_used_ms} ms ago (idle after {window} ms)"
    # The last extra copy goes only if the model is idle everywhere; the record's last use
    # lags the other holders' by up to a refresh, so it must be older by that much more.
    everywhere = window + int(window * LAST_USE_REFRESH_FRACTION)
    if len(others) == 1 and now - record.last_used_ms < everywhere:
        return f"used {now - record.last_used_ms} ms ago elsewhere (idle after {everywhere} ms)"
    limit = int(policy.scaleup_rpm * SCALE_DOWN_RATE_FRACTION)
    busiest = max(mesh.live_rpm[i] for i in others)
    if busiest + copy.rpm > limit:
        return f"remaining copies would serve up to {busiest + copy.rpm} req/min (limit {limit})"
    return None


def plan_scale_down(
    copies: Iterable[LocalCopy],
    records: Mapping[str, ModelRecord],
    mesh: MeshView,
    policy: CopyPolicy,
    *,
    capacity_units: int,
) -> list[str]:
    """The local copies to remove now, least recently used first, within the run's budget."""
    budget = int(capacity_units * policy.per_run_fraction)
    chosen: list[str] = []
    for copy in sorted(copies, key=lambda c: c.last_used_ms):
        record = records.get(copy.model_id)
        if record is None or keep_reason(copy, record, mesh, policy) is not None:
            continue
        if chosen and copy.units > budget:
            break
        chosen.append(copy.model_id)
        budget -= copy.units
    return chosen


def last_use_to_publish(
    copy: LocalCopy, record: ModelRecord, mesh: MeshView, policy: CopyPolicy
) -> int | None:
    """The last use to write into the model's record (`lu`) so other holders see the model
    is in use; None when the record is fresh enough or the model has no other copy."""
    if not _other_holders(record, mesh):
        return None
    stale_after = int(idle_ms(mesh.cache_age_ms, policy) * LAST_USE_REFRESH_FRACTION)
    if copy.last_used_ms - record.last_used_ms < max(1, stale_after):
        return None
    return copy.last_used_ms


def is_min_copy(
    record: ModelRecord | None, instance_id: str, is_live: Callable[[str], bool]
) -> bool:
    """Whether this instance's copy is one of the model's minimum copies: the oldest
    `min_copies` live copies (by load start, then instance id) are. Every pod ranks the same
    way, so when a model briefly has more copies than its minimum, only the newest may go:
    two pods never both evict theirs at once."""
    if record is None or record.min_copies <= 0:
        return False
    if InstanceId(instance_id) not in record.instance_ids:
        return False
    live = sorted((t, iid) for iid, t in record.instance_ids.items() if is_live(iid))
    oldest = [iid for _, iid in live[: record.min_copies]]
    return instance_id in oldest
