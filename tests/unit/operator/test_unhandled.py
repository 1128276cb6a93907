"""When the leader nudges an InferenceService that kopf left unreconciled
(mmesh.operator.handlers.inferenceservices.unhandled_for)."""

from __future__ import annotations

from datetime import UTC, datetime

from mmesh.operator.handlers import inferenceservices
from mmesh.operator.handlers.inferenceservices import RECONCILE_PROGRESS_ANNOTATION, unhandled_for
from mmesh.operator.handlers.lifecycle import LAST_HANDLED_ANNOTATION

CREATED = "2026-12-07T16:38:43Z"
CREATED_S = datetime(2026, 12, 7, 16, 38, 43, tzinfo=UTC).timestamp()


def isvc(**meta: object) -> dict[str, object]:
    return {"metadata": {"name": "m", "creationTimestamp": CREATED, **meta}}


def test_never_handled_counts_from_its_creation() -> None:
    assert unhandled_for(isvc(annotations={"other": "x"}), CREATED_S + 7.5) == 7.5


def test_handled_once_is_never_unhandled_again() -> None:
    body = isvc(annotations={LAST_HANDLED_ANNOTATION: "{}"})
    assert unhandled_for(body, CREATED_S + 600) == 0.0


def test_a_reconcile_kopf_is_running_or_retrying_is_not_unhandled() -> None:
    handler = inferenceservices.reconcile_isvc.__name__  # kopf's handler id
    assert f"mmesh.serving.kserve.io/{handler}" == RECONCILE_PROGRESS_ANNOTATION
    body = isvc(annotations={RECONCILE_PROGRESS_ANNOTATION: '{"retries": 3}'})
    assert unhandled_for(body, CREATED_S + 60) == 0.0


def test_being_deleted_or_without_a_creation_time_is_left_alone() -> None:
    assert unhandled_for(isvc(deletionTimestamp=CREATED), CREATED_S + 60) == 0.0
    assert unhandled_for({"metadata": {"name": "m"}}, CREATED_S + 60) == 0.0
    assert unhandled_for(isvc(creationTimestamp="yesterday"), CREATED_S + 60) == 0.0


def test_a_clock_behind_the_api_servers_gives_zero_not_a_negative_age() -> None:
    assert unhandled_for(isvc(), CREATED_S - 3) == 0.0
