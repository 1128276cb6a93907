"""The status a ModelMesh client sees for a model and a vmodel (mmesh.router.modelstatus).

Statuses are decoded from registry records alone, with `now` passed in for failure expiry.
"""

from __future__ import annotations

import pytest

from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.proto import model_mesh_pb2 as pb
from mmesh.core.records import ModelRecord, VModelRecord
from mmesh.router.modelstatus import (
    CopyInfo,
    ModelState,
    VModelState,
    decode_model_status,
    decode_vmodel_state,
)

NOW = 1_700_000_000_000
EXPIRY = 900_000  # MM_LOAD_FAILURE_EXPIRY_TIME_MS default
MINUTE = 60_000

A, B, C = InstanceId("inst-a"), InstanceId("inst-b"), InstanceId("inst-c")


def record(
    *,
    loaded: dict[InstanceId, int] | None = None,
    loading: dict[InstanceId, int] | None = None,
    failed: dict[InstanceId, int] | None = None,
) -> ModelRecord:
    """A record with copies in the given states; values are the copy's time (epoch ms)."""
    rec = ModelRecord(model_type="sklearn")
    for iid, at in (failed or {}).items():
        rec = rec.with_copy_failed(iid, f"load failed on {iid}", at)
    for iid, at in (loading or {}).items():
        rec = rec.with_copy_loading(iid, at)
    for iid, at in (loaded or {}).items():
        rec = rec.with_copy_loading(iid, at - MINUTE).with_copy_loaded(iid, at)
    return rec


def status_of(rec: ModelRecord | None, *, now: int = NOW):
    return decode_model_status(rec, now_ms=now, failure_expiry_ms=EXPIRY)


# ---------------------------------------------------------------- overall model state

RECENT = NOW - MINUTE

PRECEDENCE = [
    pytest.param({}, ModelState.NOT_LOADED, id="no-copies"),
    pytest.param({"loaded": {A: RECENT}}, ModelState.LOADED, id="loaded"),
    pytest.param({"loading": {A: RECENT}}, ModelState.LOADING, id="loading"),
    pytest.param({"failed": {A: RECENT}}, ModelState.LOADING_FAILED, id="failed"),
    pytest.param(
        {"loaded": {A: RECENT}, "loading": {B: RECENT}}, ModelState.LOADED, id="loaded+loading"
    ),
    pytest.param(
        {"loaded": {A: RECENT}, "failed": {B: RECENT}}, ModelState.LOADED, id="loaded+failed"
    ),
    pytest.param(
        {"loading": {A: RECENT}, "failed": {B: RECENT}}, ModelState.LOADING, id="loading+failed"
    ),
    pytest.param(
        {"loaded": {A: RECENT}, "loading": {B: RECENT}, "failed": {C: RECENT}},
        ModelState.LOADED,
        id="all-three",
    ),
]


@pytest.mark.parametrize(("copies", "expected"), PRECEDENCE)
def test_model_state_is_the_best_copy_state(copies, expected):
    assert status_of(record(**copies)).state is expected


def test_model_state_is_not_found_when_no_record():
    status = status_of(None)

    assert status.state is ModelState.NOT_FOUND
    assert status.errors == ()
    assert status.copies == ()


def test_state_values_match_the_model_mesh_proto():
    assert {s.name: int(s) for s in ModelState} == dict(pb.ModelStatusInfo.ModelStatus.items())
    assert {s.name: int(s) for s in VModelState} == dict(pb.VModelStatusInfo.VModelStatus.items())


# ---------------------------------------------------------------- failure expiry


@pytest.mark.parametrize(
    ("failed_ago", "expected"),
    [
        pytest.param(0, ModelState.LOADING_FAILED, id="just-now"),
        pytest.param(EXPIRY - 1, ModelState.LOADING_FAILED, id="1ms-before-expiry"),
        pytest.param(EXPIRY, ModelState.NOT_LOADED, id="at-expiry"),
        pytest.param(EXPIRY + MINUTE, ModelState.NOT_LOADED, id="long-expired"),
    ],
)
def test_model_state_forgets_failures_when_they_expire(failed_ago, expected):
    status = status_of(record(failed={A: NOW - failed_ago}))

    assert status.state is expected


def test_expired_failure_is_left_out_of_errors_and_copies():
    rec = record(failed={A: NOW - EXPIRY - 1, B: NOW - MINUTE})

    status = status_of(rec)

    assert status.errors == (f"load failed on {B}",)
    assert [c.location for c in status.copies] == [B]


def test_expired_failure_does_not_hide_a_loading_copy_on_the_same_record():
    rec = record(failed={A: NOW - 2 * EXPIRY}, loading={B: NOW - MINUTE})

    assert status_of(rec).state is ModelState.LOADING


def test_failure_expiry_is_measured_from_now():
    rec = record(failed={A: NOW})

    assert status_of(rec, now=NOW + EXPIRY - 1).state is ModelState.LOADING_FAILED
    assert status_of(rec, now=NOW + EXPIRY).state is ModelState.NOT_LOADED


# ---------------------------------------------------------------- errors and copy infos


def test_errors_list_the_message_of_every_failed_instance():
    rec = record(failed={A: NOW - 3 * MINUTE, B: NOW - 2 * MINUTE, C: NOW - MINUTE})

    status = status_of(rec)

    assert status.state is ModelState.LOADING_FAILED
    assert sorted(status.errors) == sorted(f"load failed on {i}" for i in (A, B, C))


def test_errors_name_a_generic_failure_when_the_record_has_no_message():
    # a failedIn entry without its `fails` message (older or foreign writers)
    rec = ModelRecord.from_json(b'{"type":"sklearn","failedIn":{"inst-a":%d}}' % (NOW - MINUTE))

    status = status_of(rec)

    assert status.state is ModelState.LOADING_FAILED
    assert len(status.errors) == 1
    assert "fail" in status.errors[0]


def test_errors_are_empty_when_nothing_failed():
    assert status_of(record(loaded={A: RECENT}, loading={B: RECENT})).errors == ()


def test_copy_infos_are_newest_first():
    rec = record(
        loaded={A: NOW - 5 * MINUTE},
        loading={B: NOW - 1 * MINUTE},
        failed={C: NOW - 3 * MINUTE},
    )

    status = status_of(rec)

    assert status.copies == (
        CopyInfo(B, ModelState.LOADING, NOW - 1 * MINUTE),
        CopyInfo(C, ModelState.LOADING_FAILED, NOW - 3 * MINUTE),
        CopyInfo(A, ModelState.LOADED, NOW - 5 * MINUTE),
    )


def test_copy_infos_are_newest_first_regardless_of_instance_names():
    rec = record(loaded={A: NOW - 3 * MINUTE, B: NOW - 1 * MINUTE, C: NOW - 2 * MINUTE})

    assert [c.location for c in status_of(rec).copies] == [B, C, A]


def test_loaded_copy_time_is_when_it_finished_loading():
    rec = ModelRecord(model_type="sklearn").with_copy_loading(A, NOW - 10 * MINUTE)
    rec = rec.with_copy_loaded(A, NOW - MINUTE)

    (copy,) = status_of(rec).copies

    assert copy == CopyInfo(A, ModelState.LOADED, NOW - MINUTE)


def test_loading_copy_time_is_when_its_load_started():
    rec = ModelRecord(model_type="sklearn").with_copy_loading(A, NOW - 2 * MINUTE)

    (copy,) = status_of(rec).copies

    assert copy == CopyInfo(A, ModelState.LOADING, NOW - 2 * MINUTE)


def test_new_load_supersedes_an_old_failure_on_the_same_instance():
    rec = record(failed={A: NOW - 2 * MINUTE}).with_copy_loading(A, NOW - MINUTE)

    status = status_of(rec)

    assert status.state is ModelState.LOADING
    assert status.errors == ()
    assert [c.state for c in status.copies] == [ModelState.LOADING]


def test_unloaded_copy_leaves_the_model_not_loaded():
    rec = record(loaded={A: RECENT}).without_copy(A)

    status = status_of(rec)

    assert status.state is ModelState.NOT_LOADED
    assert status.copies == ()


# ---------------------------------------------------------------- vmodel state


def M(name: str) -> ModelId:
    return ModelId(name)


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        pytest.param(None, VModelState.NOT_FOUND, id="absent"),
        pytest.param(VModelRecord(M("m1"), M("m1")), VModelState.DEFINED, id="settled"),
        pytest.param(
            VModelRecord(M("m1"), M("m1"), target_failed=True),
            VModelState.DEFINED,
            id="settled-with-stale-failed-flag",
        ),
        pytest.param(VModelRecord(M("m1"), M("m2")), VModelState.TRANSITIONING, id="moving"),
        pytest.param(
            VModelRecord(M("m1"), M("m2"), target_failed=True),
            VModelState.TRANSITION_FAILED,
            id="target-failed",
        ),
    ],
)
def test_vmodel_state_follows_the_record(rec, expected):
    assert decode_vmodel_state(rec) is expected
