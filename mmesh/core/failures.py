"""Pure: when a load failure stops counting.

A load that failed on an instance is recorded in the model record (`failedIn`: instance ->
epoch ms of the failure). The failure is live for `expiry_ms` after it happened: while it
is, no new copy is placed on that instance, the model shows FailedToLoad (router status and
InferenceService status alike) and a request may be refused with its message. Once it
expires it counts for nothing, and the router's repair pass drops it from the record.
Mirrors the reference router's MM_LOAD_FAILURE_EXPIRY_TIME_MS (default 15 minutes).

Callers: router/modelstatus.py, router/placement.py, router/routing.py,
router/dataplane.py, router/janitor.py, router/repair.py, router/loading.py and
operator/status.py.
"""

from __future__ import annotations

from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord

DEFAULT_FAILURE_EXPIRY_MS = 900_000
"""The routers' default MM_LOAD_FAILURE_EXPIRY_TIME_MS."""


def is_live(failed_ms: int, *, now_ms: int, expiry_ms: int) -> bool:
    """A failure at `failed_ms` is live until `expiry_ms` have passed, that instant excluded."""
    return now_ms - failed_ms < expiry_ms


def failed_instances(record: ModelRecord, *, now_ms: int, expiry_ms: int) -> frozenset[InstanceId]:
    """The instances whose last load of the model failed and whose failure is live."""
    return frozenset(
        iid
        for iid, at in record.failed_in.items()
        if is_live(at, now_ms=now_ms, expiry_ms=expiry_ms)
    )
