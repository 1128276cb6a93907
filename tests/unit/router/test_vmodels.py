"""vmodel decisions (mmesh.router.vmodels): setVModel, promotion of a loaded target, referents.

Reference behaviour: kserve/modelmesh VModelManager.updateVModel and modelmesh-features.md
§1.1 (SetVModelRequest) and §4.10 (transitions).
"""

from __future__ import annotations

import pytest

from mmesh.core.ids import ModelId
from mmesh.core.records import VModelRecord
from mmesh.router.errors import AlreadyExists, HasReferents, ModelNotFound, RouterError
from mmesh.router.vmodels import SetVModel, plan_promotion, plan_set_vmodel, referents

V = "my-vmodel"
OLD, NEW, OTHER = ModelId("model-v1"), ModelId("model-v2"), ModelId("model-v3")

SETTLED = VModelRecord(OLD, OLD, owner="team-a")
MOVING = VModelRecord(OLD, NEW, owner="team-a")
STUCK = VModelRecord(OLD, NEW, owner="team-a", target_failed=True)


def req(target: ModelId = NEW, **kwargs) -> SetVModel:
    return SetVModel(V, target, **kwargs)


# ---------------------------------------------------------------- new vmodel


@pytest.mark.parametrize("active_loaded", [False, True])
def test_new_vmodel_points_straight_at_its_target(active_loaded):
    after = plan_set_vmodel(None, req(NEW, owner="team-a"), active_loaded=active_loaded)

    assert after == VModelRecord(NEW, NEW, owner="team-a")
    assert not after.in_transition


def test_new_vmodel_without_owner_has_no_owner():
    assert plan_set_vmodel(None, req(NEW), active_loaded=False).owner == ""


def test_update_only_on_missing_vmodel_is_not_found():
    with pytest.raises(ModelNotFound, match=V) as info:
        plan_set_vmodel(None, req(NEW, update_only=True), active_loaded=False)

    assert info.value.grpc_code == "NOT_FOUND"


def test_update_only_on_existing_vmodel_sets_the_target():
    after = plan_set_vmodel(SETTLED, req(NEW, update_only=True), active_loaded=True)

    assert (after.active_model, after.target_model) == (OLD, NEW)


def test_expected_target_on_missing_vmodel_fails_unless_it_is_the_requested_target():
    with pytest.raises(HasReferents) as info:
        plan_set_vmodel(None, req(NEW, expected_target=OLD), active_loaded=False)

    assert info.value.grpc_code == "FAILED_PRECONDITION"
    assert plan_set_vmodel(None, req(NEW, expected_target=NEW), active_loaded=False) == (
        VModelRecord(NEW, NEW)
    )


# ---------------------------------------------------------------- owner and CAS on target


@pytest.mark.parametrize("current", [SETTLED, MOVING], ids=["settled", "moving"])
def test_owner_mismatch_is_already_exists(current):
    with pytest.raises(AlreadyExists, match="owner") as info:
        plan_set_vmodel(current, req(OTHER, owner="team-b"), active_loaded=True)

    assert info.value.grpc_code == "ALREADY_EXISTS"


@pytest.mark.parametrize("owner", ["", "team-a"], ids=["no-owner", "same-owner"])
def test_matching_or_absent_owner_may_update(owner):
    after = plan_set_vmodel(SETTLED, req(NEW, owner=owner), active_loaded=True)

    assert after.target_model == NEW
    assert after.owner == "team-a"


def test_owner_is_checked_before_the_expected_target():
    with pytest.raises(AlreadyExists):
        plan_set_vmodel(
            SETTLED, req(NEW, owner="team-b", expected_target=OTHER), active_loaded=True
        )


@pytest.mark.parametrize("current", [SETTLED, MOVING], ids=["settled", "moving"])
def test_expected_target_mismatch_fails_precondition(current):
    with pytest.raises(HasReferents, match="expected") as info:
        plan_set_vmodel(current, req(OTHER, expected_target=OTHER), active_loaded=True)

    assert info.value.grpc_code == "FAILED_PRECONDITION"


def test_expected_target_matching_the_current_target_allows_the_update():
    after = plan_set_vmodel(MOVING, req(OTHER, expected_target=NEW), active_loaded=True)

    assert (after.active_model, after.target_model) == (OLD, OTHER)


def test_expected_target_is_compared_with_the_target_not_the_active_model():
    with pytest.raises(HasReferents):
        plan_set_vmodel(MOVING, req(OTHER, expected_target=OLD), active_loaded=True)


def test_retried_set_with_expected_target_succeeds_once_the_target_is_set():
    # first call: setVModel(target=NEW, expected=OLD) moved SETTLED to MOVING; the client
    # times out and sends the same request again. The reference (VModelManager.updateVModel)
    # only checks expectedTargetModelId when the requested target differs from the current.
    after = plan_set_vmodel(MOVING, req(NEW, expected_target=OLD), active_loaded=True)

    assert after == MOVING


# ---------------------------------------------------------------- when the switch happens


@pytest.mark.parametrize(
    ("force", "active_loaded", "switches_now"),
    [
        pytest.param(False, True, False, id="active-loaded"),
        pytest.param(False, False, True, id="active-loaded-nowhere"),
        pytest.param(True, True, True, id="force"),
        pytest.param(True, False, True, id="force-active-loaded-nowhere"),
    ],
)
def test_new_target_becomes_active_now_only_with_force_or_nothing_loaded(
    force, active_loaded, switches_now
):
    after = plan_set_vmodel(SETTLED, req(NEW, force=force), active_loaded=active_loaded)

    assert after.target_model == NEW
    assert after.active_model == (NEW if switches_now else OLD)
    assert not after.target_failed


def test_transition_keeps_the_owner():
    assert plan_set_vmodel(SETTLED, req(NEW), active_loaded=True).owner == "team-a"


def test_setting_the_same_target_again_changes_nothing():
    assert plan_set_vmodel(MOVING, req(NEW), active_loaded=True) == MOVING
    assert plan_set_vmodel(SETTLED, req(OLD), active_loaded=True) == SETTLED


def test_force_completes_a_pending_transition_to_the_same_target():
    after = plan_set_vmodel(MOVING, req(NEW, force=True), active_loaded=True)

    assert (after.active_model, after.target_model) == (NEW, NEW)


def test_new_target_replaces_a_pending_one():
    after = plan_set_vmodel(MOVING, req(OTHER), active_loaded=True)

    assert (after.active_model, after.target_model) == (OLD, OTHER)


def test_setting_the_active_model_as_target_cancels_the_transition():
    after = plan_set_vmodel(MOVING, req(OLD), active_loaded=True)

    assert after == SETTLED


def test_new_target_clears_the_failed_flag():
    after = plan_set_vmodel(STUCK, req(OTHER), active_loaded=True)

    assert (after.target_model, after.target_failed) == (OTHER, False)


def test_force_on_a_failed_transition_switches_and_clears_the_flag():
    after = plan_set_vmodel(STUCK, req(NEW, force=True), active_loaded=True)

    assert after == VModelRecord(NEW, NEW, owner="team-a")


def test_plan_does_not_touch_the_current_record():
    plan_set_vmodel(SETTLED, req(NEW, force=True), active_loaded=True)

    assert VModelRecord(OLD, OLD, owner="team-a") == SETTLED


def test_rejections_are_router_errors():
    # servicers map RouterError subclasses to gRPC codes; anything else becomes INTERNAL
    for current, request in [
        (None, req(update_only=True)),
        (SETTLED, req(owner="team-b")),
        (SETTLED, req(expected_target=OTHER)),
    ]:
        with pytest.raises(RouterError):
            plan_set_vmodel(current, request, active_loaded=True)


# ---------------------------------------------------------------- promotion


def test_loaded_target_is_promoted():
    after = plan_promotion(MOVING, target_loaded=True, target_failed=False)

    assert after == VModelRecord(NEW, NEW, owner="team-a")


def test_loaded_target_is_promoted_even_after_a_failure_elsewhere():
    after = plan_promotion(STUCK, target_loaded=True, target_failed=True)

    assert after == VModelRecord(NEW, NEW, owner="team-a")


def test_failed_target_marks_the_transition_failed():
    after = plan_promotion(MOVING, target_loaded=False, target_failed=True)

    assert after == STUCK


def test_target_no_longer_failing_clears_the_flag():
    after = plan_promotion(STUCK, target_loaded=False, target_failed=False)

    assert after == MOVING


@pytest.mark.parametrize(
    ("current", "target_failed"),
    [
        pytest.param(MOVING, False, id="still-loading"),
        pytest.param(STUCK, True, id="still-failed"),
    ],
)
def test_promotion_changes_nothing_while_the_target_state_is_unchanged(current, target_failed):
    assert plan_promotion(current, target_loaded=False, target_failed=target_failed) is None


@pytest.mark.parametrize("target_loaded", [False, True])
@pytest.mark.parametrize("target_failed", [False, True])
def test_settled_vmodel_is_never_promoted(target_loaded, target_failed):
    assert plan_promotion(SETTLED, target_loaded=target_loaded, target_failed=target_failed) is None


# ---------------------------------------------------------------- referents


VMODELS = {
    "settled-on-old": VModelRecord(OLD, OLD),
    "moving-old-to-new": VModelRecord(OLD, NEW),
    "settled-on-new": VModelRecord(NEW, NEW),
}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param(OLD, ["moving-old-to-new", "settled-on-old"], id="active"),
        pytest.param(NEW, ["moving-old-to-new", "settled-on-new"], id="target-and-active"),
        pytest.param(OTHER, [], id="unreferenced"),
    ],
)
def test_referents_are_the_vmodels_pointing_at_a_model_sorted(model, expected):
    assert referents(VMODELS, model) == expected


def test_referents_of_no_vmodels_is_empty():
    assert referents({}, OLD) == []
