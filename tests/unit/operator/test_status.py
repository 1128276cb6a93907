"""Records -> InferenceService status: every model state, transitions, failures, conditions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.records import ModelRecord, VModelRecord
from mmesh.operator.errors import (
    FailureReason,
    InvalidSpec,
    NoSupportingRuntime,
    RuntimeNotRecognized,
)
from mmesh.operator.service import Endpoints
from mmesh.operator.status import (
    RUNTIME_WAIT_MESSAGE,
    Observation,
    decode_status,
    failure_expiry_ms,
    next_change_ms,
    parse_rfc3339,
    rfc3339,
    status_patch,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
NOW_TEXT = "2023-11-14T22:13:20Z"
EXPIRY = 900_000
ENDPOINTS = Endpoints(
    "grpc://modelmesh-serving.modelmesh-serving:8033",
    "http://modelmesh-serving.modelmesh-serving:8008",
)
M1 = ModelId("example-sklearn-isvc__isvc-0123456789")
M2 = ModelId("example-sklearn-isvc__isvc-abcdefabcd")
POD_A, POD_B, POD_C = (
    InstanceId("7db675-twrwd"),
    InstanceId("7db675-xvd8q"),
    InstanceId("5f7c-abcde"),
)


def record(
    *,
    loaded: tuple[InstanceId, ...] = (),
    loading: tuple[InstanceId, ...] = (),
    failed: dict[InstanceId, int] | None = None,
) -> ModelRecord:
    rec = ModelRecord(model_type="mt:sklearn", model_path="sklearn/mnist-svm.joblib")
    for iid in loading:
        rec = rec.with_copy_loading(iid, NOW - 5000)
    for iid in loaded:
        rec = rec.with_copy_loaded(iid, NOW - 4000)
    for iid, at in (failed or {}).items():
        rec = rec.with_copy_failed(iid, f"load failed on {iid}", at)
    return rec


def settled(model: ModelRecord | None, model_id: ModelId = M1) -> Observation:
    models = {} if model is None else {model_id: model}
    return Observation(VModelRecord(model_id, model_id, owner="isvc"), models, model_id)


def moving(active: ModelRecord, target: ModelRecord | None, *, failed: bool = False) -> Observation:
    models = {M1: active} | ({} if target is None else {M2: target})
    vmodel = VModelRecord(M1, M2, owner="isvc", target_failed=failed)
    return Observation(vmodel, models, M2)


def decode(obs: Observation, previous: dict[str, Any] | None = None, now: int = NOW, **kw: Any):
    return decode_status(
        obs,
        endpoints=kw.pop("endpoints", ENDPOINTS),
        now_ms=now,
        failure_expiry_ms=EXPIRY,
        previous=previous,
    )


def states(status: dict[str, Any]) -> tuple[str, str, str]:
    ms = status["modelStatus"]
    return (
        ms["states"]["activeModelState"],
        ms["states"]["targetModelState"],
        ms["transitionStatus"],
    )


def copies(status: dict[str, Any]) -> tuple[int, int]:
    c = status["modelStatus"]["copies"]
    return c["totalCopies"], c["failedCopies"]


def ready(status: dict[str, Any]) -> str:
    (cond,) = [c for c in status["conditions"] if c["type"] == "PredictorReady"]
    (top,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert cond["status"] == top["status"]
    return str(cond["status"])


def failure(status: dict[str, Any]) -> Any:
    """lastFailureInfo, or None."""
    return status["modelStatus"].get("lastFailureInfo")


# ---------------------------------------------------------------- single model states


def test_loaded_matches_the_tutorial_describe_output() -> None:
    status = decode(settled(record(loaded=(POD_A, POD_B))))
    assert status == {
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": ""},
            "copies": {"failedCopies": 0, "totalCopies": 2},
        },
        "conditions": [
            {"type": "PredictorReady", "status": "True", "lastTransitionTime": NOW_TEXT},
            {"type": "Ready", "status": "True", "lastTransitionTime": NOW_TEXT},
        ],
        "url": "grpc://modelmesh-serving.modelmesh-serving:8033",
        "components": {
            "predictor": {
                "url": "grpc://modelmesh-serving.modelmesh-serving:8033",
                "grpcUrl": "grpc://modelmesh-serving.modelmesh-serving:8033",
                "restUrl": "http://modelmesh-serving.modelmesh-serving:8008",
            }
        },
    }


@pytest.mark.parametrize(
    ("obs", "state", "counts", "is_ready"),
    [
        (Observation(None), "Pending", (0, 0), "False"),
        (settled(None), "Pending", (0, 0), "False"),
        (settled(record()), "Standby", (0, 0), "True"),
        (settled(record(loading=(POD_A,))), "Loading", (1, 0), "True"),
        (settled(record(loaded=(POD_A,), loading=(POD_B,))), "Loaded", (2, 0), "True"),
        (settled(record(failed={POD_A: NOW - 1000})), "FailedToLoad", (1, 1), "False"),
        (settled(record(failed={POD_A: NOW - EXPIRY})), "Standby", (0, 0), "True"),
        (settled(record(loaded=(POD_A,), failed={POD_B: NOW - 1000})), "Loaded", (2, 1), "True"),
        (settled(record(loading=(POD_A,), failed={POD_B: NOW - 1000})), "Loading", (2, 1), "True"),
    ],
    ids=[
        "no vmodel",
        "vmodel without model record",
        "standby",
        "loading",
        "loaded",
        "failed",
        "failure expired",
        "loaded elsewhere after a failure",
        "loading elsewhere after a failure",
    ],
)
def test_model_states(obs: Observation, state: str, counts: tuple[int, int], is_ready: str) -> None:
    status = decode(obs)
    assert states(status) == (state, "", "UpToDate")
    assert copies(status) == counts
    assert ready(status) == is_ready
    assert ("url" in status) is (is_ready == "True")
    assert ("components" in status) is (is_ready == "True")


def test_load_failure_info() -> None:
    status = decode(settled(record(failed={POD_A: NOW - 60_000, POD_B: NOW - 1000})))
    assert failure(status) == {
        "reason": "ModelLoadFailed",
        "message": f"load failed on {POD_B}",
        "location": POD_B,
        "modelRevisionName": M1,
        "time": "2023-11-14T22:13:19Z",
    }
    condition = status["conditions"][0]
    assert (condition["reason"], condition["message"]) == (
        "ModelLoadFailed",
        f"load failed on {POD_B}",
    )


def test_loading_after_a_failure_keeps_the_failure_visible() -> None:
    status = decode(settled(record(loading=(POD_A,), failed={POD_B: NOW - 1000})))
    assert failure(status)["reason"] == "ModelLoadFailed"
    assert ready(status) == "True"


def test_loaded_model_shows_no_failure() -> None:
    assert failure(decode(settled(record(loaded=(POD_A,), failed={POD_B: NOW})))) is None


def test_a_failure_shows_until_its_expiry_then_standby() -> None:
    """The status changes at the expiry with no record changing: the reporter must be told
    when, and the status then must be Standby with no failure."""
    obs = settled(record(failed={POD_A: NOW - 60_000, POD_B: NOW - 1000}))
    expires = next_change_ms(obs, now_ms=NOW, failure_expiry_ms=EXPIRY)
    assert expires == NOW - 60_000 + EXPIRY
    assert states(decode(obs, now=expires - 1))[0] == "FailedToLoad"
    assert copies(decode(obs, now=expires)) == (1, 1)  # one of the two failures left
    last = next_change_ms(obs, now_ms=expires, failure_expiry_ms=EXPIRY)
    assert last == NOW - 1000 + EXPIRY
    after = decode(obs, now=last)
    assert (states(after)[0], copies(after), failure(after)) == ("Standby", (0, 0), None)
    assert next_change_ms(obs, now_ms=last, failure_expiry_ms=EXPIRY) is None


def test_nothing_expires_without_failures() -> None:
    obs = settled(record(loaded=(POD_A,), loading=(POD_B,)))
    assert next_change_ms(obs, now_ms=NOW, failure_expiry_ms=EXPIRY) is None
    assert next_change_ms(Observation(None), now_ms=NOW) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 900_000),
        ({"MM_LOAD_FAILURE_EXPIRY_TIME_MS": "30000"}, 30_000),
        ({"MM_LOAD_FAILURE_EXPIRY_TIME_MS": " 5000 "}, 5_000),
        ({"MM_LOAD_FAILURE_EXPIRY_TIME_MS": "soon"}, 900_000),
        ({"MM_LOAD_FAILURE_EXPIRY_TIME_MS": "0"}, 900_000),
        ({"MM_LOAD_FAILURE_EXPIRY_TIME_MS": "²"}, 900_000),
    ],
)
def test_failure_expiry_follows_the_routers_environment(env: dict[str, str], expected: int) -> None:
    assert failure_expiry_ms(env) == expected


# ---------------------------------------------------------------- transitions


def test_transition_in_progress() -> None:
    status = decode(moving(record(loaded=(POD_A, POD_B)), record(loading=(POD_C,))))
    assert states(status) == ("Loaded", "Loading", "InProgress")
    assert copies(status) == (3, 0)
    assert ready(status) == "True"


def test_transition_target_not_registered_yet() -> None:
    assert states(decode(moving(record(loaded=(POD_A,)), None))) == (
        "Loaded",
        "Pending",
        "InProgress",
    )


def test_transition_blocked_by_failed_load() -> None:
    obs = moving(record(loaded=(POD_A,)), record(failed={POD_C: NOW - 1000}), failed=True)
    status = decode(obs)
    assert states(status) == ("Loaded", "FailedToLoad", "BlockedByFailedLoad")
    assert failure(status)["modelRevisionName"] == M2
    assert ready(status) == "True"  # the active model still serves


def test_blocked_transition_retrying_shows_in_progress() -> None:
    obs = moving(record(loaded=(POD_A,)), record(loading=(POD_B,)), failed=True)
    assert states(decode(obs)) == ("Loaded", "Loading", "InProgress")


# ---------------------------------------------------------------- operator-side problems


def test_invalid_spec_never_registered() -> None:
    problem = InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, "modelFormat.name is required")
    status = decode(Observation(None, problem=problem))
    assert states(status) == ("FailedToLoad", "", "InvalidSpec")
    assert failure(status) == {
        "reason": "InvalidPredictorSpec",
        "message": "modelFormat.name is required",
        "time": NOW_TEXT,
    }
    assert ready(status) == "False"


def test_invalid_spec_after_a_good_one_keeps_serving_the_old_model() -> None:
    problem = InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, "both storageUri and storage.path")
    obs = Observation(VModelRecord(M1, M1), {M1: record(loaded=(POD_A,))}, None, problem)
    status = decode(obs)
    assert states(status) == ("Loaded", "", "InvalidSpec")
    assert failure(status)["reason"] == "InvalidPredictorSpec"
    assert ready(status) == "True"


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        (
            NoSupportingRuntime("No ServingRuntime supports specified model type"),
            "NoSupportingRuntime",
        ),
        (RuntimeNotRecognized("Specified runtime name not recognized"), "RuntimeNotRecognized"),
    ],
)
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unregistered"])
def test_no_runtime_for_the_model(problem: InvalidSpec, reason: str, registered: bool) -> None:
    obs = settled(record()) if registered else Observation(None, model_id=M1)
    status = decode(Observation(obs.vmodel, obs.models, M1, problem))
    assert states(status) == ("FailedToLoad", "", "UpToDate")
    assert failure(status)["reason"] == reason
    assert failure(status)["message"] == problem.message
    assert copies(status) == (0, 0)
    assert ready(status) == "False"


def test_waiting_for_runtime_pod() -> None:
    obs = settled(record())
    status = decode(Observation(obs.vmodel, obs.models, M1, waiting_for_runtime=True))
    assert states(status) == ("Loading", "", "UpToDate")
    assert failure(status) == {
        "reason": "RuntimeUnhealthy",
        "message": RUNTIME_WAIT_MESSAGE,
        "modelRevisionName": M1,
        "time": NOW_TEXT,
    }
    assert ready(status) == "False"
    assert "url" not in status


def test_waiting_before_registration_stays_pending() -> None:
    status = decode(Observation(None, model_id=M1, waiting_for_runtime=True))
    assert states(status)[0] == "Pending"
    assert failure(status)["reason"] == "RuntimeUnhealthy"


def test_loaded_model_is_not_waiting() -> None:
    obs = settled(record(loaded=(POD_A,)))
    status = decode(Observation(obs.vmodel, obs.models, M1, waiting_for_runtime=True))
    assert states(status)[0] == "Loaded"
    assert failure(status) is None
    assert ready(status) == "True"


def test_new_target_waiting_does_not_take_the_active_model_down() -> None:
    obs = moving(record(loaded=(POD_A,)), record())
    status = decode(Observation(obs.vmodel, obs.models, M2, waiting_for_runtime=True))
    assert states(status) == ("Loaded", "Loading", "InProgress")
    assert failure(status)["reason"] == "RuntimeUnhealthy"
    assert ready(status) == "True"


# ---------------------------------------------------------------- stability across reconciles


def test_non_load_failure_keeps_its_time_while_unchanged() -> None:
    obs = settled(record())
    waiting = Observation(obs.vmodel, obs.models, M1, waiting_for_runtime=True)
    first = decode(waiting)
    later = decode(waiting, previous=first, now=NOW + 300_000)
    assert later == first  # nothing to patch
    problem = NoSupportingRuntime("no runtime")
    changed = decode(
        Observation(obs.vmodel, obs.models, M1, problem), previous=first, now=NOW + 300_000
    )
    assert failure(changed)["time"] == rfc3339(NOW + 300_000)


def test_condition_transition_time_moves_only_on_change() -> None:
    standby = decode(settled(record()))
    loaded = decode(settled(record(loaded=(POD_A,))), previous=standby, now=NOW + 60_000)
    assert loaded["conditions"][0]["lastTransitionTime"] == NOW_TEXT
    failed = decode(settled(record(failed={POD_A: NOW})), previous=loaded, now=NOW + 120_000)
    assert failed["conditions"][0]["lastTransitionTime"] == rfc3339(NOW + 120_000)


def test_rest_url_left_out_when_rest_is_off() -> None:
    status = decode(settled(record(loaded=(POD_A,))), endpoints=Endpoints(ENDPOINTS.grpc_url, None))
    assert "restUrl" not in status["components"]["predictor"]


def test_status_patch_clears_what_went_away() -> None:
    before = {**decode(settled(record(loaded=(POD_A,)))), "kopf": {"progress": {}}}
    before["modelStatus"]["lastFailureInfo"] = {"reason": "ModelLoadFailed", "message": "x"}
    after = decode(settled(record()), previous=before)
    after_failed = decode(settled(record(failed={POD_A: NOW})), previous=before)
    patch = status_patch(before, after_failed)
    assert patch["url"] is None
    assert patch["components"] is None
    assert "kopf" not in patch
    assert patch["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    cleared = status_patch(before, after)
    assert cleared["modelStatus"]["lastFailureInfo"] is None
    assert status_patch(None, after) == after


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400_000, "2000-02-29T00:00:00Z"),
        (1_709_164_799_999, "2024-02-28T23:59:59Z"),
        (1_709_251_199_000, "2024-02-29T23:59:59Z"),
        (NOW, NOW_TEXT),
        (4_102_444_800_000, "2100-01-01T00:00:00Z"),
    ],
)
def test_rfc3339(ms: int, text: str) -> None:
    assert rfc3339(ms) == text
    assert parse_rfc3339(text) == ms - ms % 1000


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2023-11-14 22:13:20", "2023-11-14T22:13:20+01:00"]
)
def test_parse_rfc3339_rejects(text: str) -> None:
    assert parse_rfc3339(text) is None


# ---------------------------------------------------------------- minimum copies


def test_minimum_copies_show_next_to_the_copies() -> None:
    rec = record(loaded=(POD_A, POD_B))
    status = decode(settled(replace(rec, min_copies=2)))
    assert status["modelStatus"]["copies"] == {"failedCopies": 0, "totalCopies": 2, "minCopies": 2}
    assert "minCopies" not in decode(settled(rec))["modelStatus"]["copies"]


def test_minimum_copies_show_while_waiting_for_a_runtime_and_during_a_transition() -> None:
    pinned = replace(record(), min_copies=3)
    waiting = Observation(settled(pinned).vmodel, {M1: pinned}, M1, waiting_for_runtime=True)
    assert decode(waiting)["modelStatus"]["copies"]["minCopies"] == 3
    status = decode(moving(record(loaded=(POD_A,)), replace(record(), min_copies=2)))
    assert status["modelStatus"]["copies"]["minCopies"] == 2  # the target's: what the spec asks
