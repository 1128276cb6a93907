"""Pure: the status of a model and of a vmodel, as the ModelMesh API reports them.

Decoded from registry records only (plus `now` for failure expiry), so every router gives
the same answer for the same records.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mmesh.core.failures import is_live
from mmesh.core.records import CopyState, ModelRecord, VModelRecord


class ModelState(enum.IntEnum):
    """Values of `ModelStatusInfo.ModelStatus`."""

    NOT_FOUND = 0
    NOT_LOADED = 1
    LOADING = 2
    LOADED = 3
    LOADING_FAILED = 4
    UNKNOWN = 5


class VModelState(enum.IntEnum):
    """Values of `VModelStatusInfo.VModelStatus`."""

    NOT_FOUND = 0
    DEFINED = 1
    TRANSITIONING = 2
    TRANSITION_FAILED = 3
    UNKNOWN = 5


@dataclass(frozen=True, slots=True)
class CopyInfo:
    location: str
    state: ModelState
    time_ms: int


@dataclass(frozen=True, slots=True)
class ModelStatusView:
    state: ModelState
    errors: tuple[str, ...] = ()
    copies: tuple[CopyInfo, ...] = ()


NOT_FOUND_STATUS = ModelStatusView(ModelState.NOT_FOUND)


def decode_model_status(
    record: ModelRecord | None, *, now_ms: int, failure_expiry_ms: int
) -> ModelStatusView:
    if record is None:
        return NOT_FOUND_STATUS
    copies: list[CopyInfo] = []
    errors: list[str] = []
    for iid, state in sorted(record.copy_states().items()):
        if state is CopyState.LOADED:
            copies.append(CopyInfo(iid, ModelState.LOADED, record.loaded_in[iid]))
        elif state is CopyState.LOADING:
            copies.append(CopyInfo(iid, ModelState.LOADING, record.instance_ids[iid]))
        elif is_live(record.failed_in[iid], now_ms=now_ms, expiry_ms=failure_expiry_ms):
            copies.append(CopyInfo(iid, ModelState.LOADING_FAILED, record.failed_in[iid]))
            errors.append(record.failures.get(iid, "load failed"))
    copies.sort(key=lambda c: c.time_ms, reverse=True)
    return ModelStatusView(_overall(copies), tuple(errors), tuple(copies))


def _overall(copies: list[CopyInfo]) -> ModelState:
    states = {c.state for c in copies}
    for state in (ModelState.LOADED, ModelState.LOADING, ModelState.LOADING_FAILED):
        if state in states:
            return state
    return ModelState.NOT_LOADED


def decode_vmodel_state(record: VModelRecord | None) -> VModelState:
    if record is None:
        return VModelState.NOT_FOUND
    if not record.in_transition:
        return VModelState.DEFINED
    return VModelState.TRANSITION_FAILED if record.target_failed else VModelState.TRANSITIONING
