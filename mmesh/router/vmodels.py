"""Pure: vmodel decisions. A vmodel is an alias whose target can change without downtime:
requests keep going to the active model until the new target has a loaded copy."""

from __future__ import annotations

from dataclasses import dataclass

from mmesh.core.ids import ModelId
from mmesh.core.records import VModelRecord
from mmesh.router.errors import AlreadyExists, HasReferents, ModelNotFound


@dataclass(frozen=True, slots=True)
class SetVModel:
    """What a setVModel call asks for (after parsing)."""

    vmodel_id: str
    target: ModelId
    owner: str = ""
    update_only: bool = False
    expected_target: str = ""
    force: bool = False
    default_owner: str = ""
    """Owner given to a new vmodel when the call names none (never checked on updates)."""


def plan_set_vmodel(
    current: VModelRecord | None, req: SetVModel, *, active_loaded: bool
) -> VModelRecord:
    """The record after the call. The switch is immediate for a new vmodel, with `force`, or
    when the active model is not loaded anywhere (nothing would be lost); otherwise the
    target becomes active once loaded (see `plan_promotion`)."""
    if current is None:
        if req.update_only:
            raise ModelNotFound(f"vmodel {req.vmodel_id} not found")
        if req.expected_target and req.expected_target != req.target:
            raise HasReferents(
                f"vmodel {req.vmodel_id} does not exist, expected target {req.expected_target}"
            )
        owner = req.owner or req.default_owner
        return VModelRecord(active_model=req.target, target_model=req.target, owner=owner)
    if req.owner and current.owner != req.owner:
        raise AlreadyExists(f"vmodel {req.vmodel_id} already exists with a different owner")
    retargets = req.target != current.target_model
    if req.expected_target and retargets and req.expected_target != current.target_model:
        raise HasReferents(
            f"vmodel {req.vmodel_id} target is {current.target_model}, "
            f"not the expected {req.expected_target}"
        )
    updated = current if current.target_model == req.target else current.with_target(req.target)
    if req.force or not active_loaded:
        return updated.with_target_active()
    return updated


def plan_promotion(
    current: VModelRecord, *, target_loaded: bool, target_failed: bool, active_loaded: bool = True
) -> VModelRecord | None:
    """The next record for a vmodel in transition, or None when nothing changes. The target
    becomes active once it has a loaded copy, or at once when the active model is loaded
    nowhere (no request would be served faster by waiting)."""
    if not current.in_transition:
        return None
    if target_loaded or not active_loaded:
        return current.with_target_active()
    if target_failed != current.target_failed:
        return VModelRecord(
            current.active_model, current.target_model, current.owner, target_failed=target_failed
        )
    return None


def referents(vmodels: dict[str, VModelRecord], model_id: str) -> list[str]:
    """vmodels whose active or target model is `model_id`."""
    return sorted(
        v for v, rec in vmodels.items() if model_id in (rec.active_model, rec.target_model)
    )
