"""Pure: how a cold instance warms its model server.

A model server that has just started (or restarted under its router) can take many times
longer over its first load than over the next: MLServer starts a worker process and imports
the model's runtime then, 6 to 18 s on a busy 2-core machine against 50 ms for the loads
after it. While an instance is `cold`, placement sends loads elsewhere (see
mmesh.router.placement), and the instance pays that first load itself with a trial load: a
registered model loaded under an id of its own (`trial_id`), which no request can be routed
to and which is unloaded at once. Requests never wait behind it, which they would behind a
real copy (the fault matrix saw them time out after 15 s).

The model: one of the copies the instance lost (what its model server served before), else
the most recently used model its labels allow; never one that failed to load here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from mmesh.core.labels import required_labels, satisfies
from mmesh.core.records import ModelRecord

TRIAL_PREFIX = "mmesh-warmup__"


def trial_id(instance_id: str) -> str:
    """The id a trial load uses in the runtime (never a registered model's)."""
    return TRIAL_PREFIX + instance_id


def allowed_here(record: ModelRecord, *, me: str, labels: Collection[str]) -> bool:
    """The instance's labels allow the model and it did not fail to load here."""
    return me not in record.failed_in and satisfies(labels, required_labels(record.model_type))


def first_allowed(
    records: Iterable[ModelRecord | None], *, me: str, labels: Collection[str]
) -> ModelRecord | None:
    """The first record (None: no longer registered) of a model allowed here."""
    for record in records:
        if record is not None and allowed_here(record, me=me, labels=labels):
            return record
    return None
