"""Pure: which model a cold instance loads to warm its model server.

A model server that has just started (or restarted under its router) can take many times
longer over its first load than over the next: MLServer starts a worker process and imports
the model's runtime then, 6 to 15 s on a busy 2-core machine against 50 ms for the loads
after it. While an instance is `cold`, placement sends the requests' loads elsewhere (see
mmesh.router.placement), and the instance pays that first load itself, with the model the
mesh most likely wants next: a copy it held before it lost it (the registry learns a
model's last use only when a copy unloads, so a copy lost in a crash may look unused), else
the model the registry shows most recently used; in both cases one that no live instance
holds or is loading, that its labels allow and that did not fail to load on it.
"""

from __future__ import annotations

from collections.abc import Collection

from mmesh.core.labels import required_labels, satisfies
from mmesh.core.records import ModelRecord

RECENT_MS = 3_600_000
"""Only models used within this long are worth a warm-up load."""


def worth_reloading(
    record: ModelRecord, *, me: str, live: Collection[str], labels: Collection[str]
) -> bool:
    """Whether `me` could warm up with this model: held or loading on no live instance,
    allowed here and not failed here."""
    if me in record.failed_in or any(iid in live for iid in record.instance_ids):
        return False
    return satisfies(labels, required_labels(record.model_type))


def worth_warming(
    record: ModelRecord,
    *,
    me: str,
    live: Collection[str],
    labels: Collection[str],
    since_ms: int,
) -> bool:
    """`worth_reloading`, for a model the registry shows used since `since_ms`."""
    if record.last_used_ms < since_ms or record.last_used_ms <= 0:
        return False
    return worth_reloading(record, me=me, live=live, labels=labels)
