"""Pure: registry records -> the InferenceService `status` the reference writes.

Input is an `Observation` (the vmodel record, the model records it points at, and what the
operator itself found: a spec problem, or that no pod of a supporting runtime is up). Output
is the status dict: `modelStatus` (states, transitionStatus, copies with `minCopies` when
the model keeps some, lastFailureInfo),
`conditions` (PredictorReady, Ready) and, only while the predictor is available, `url` and
`components.predictor` URLs. Mirrors kserve/modelmesh-serving predictor_controller.go
(decodeModelState, updatePredictorStatusFromVModel) and inferenceservice_registry.go
UpdateStatus, reading etcd records instead of asking the mesh:

- a model's state: Loaded if a copy is loaded, else Loading if one is loading, else
  FailedToLoad if a load failure is still live (failures expire after
  `failure_expiry_ms`), else Standby; no record yet is Pending;
- Standby and Loading become Loading + RuntimeUnhealthy while no supporting runtime pod is
  up; NoSupportingRuntime / RuntimeNotRecognized make the model FailedToLoad;
- available (PredictorReady) iff the active state is not Pending/FailedToLoad and the
  active model is not waiting for a runtime pod.

Deviations, on purpose: Pending counts as not available (nothing can serve an unregistered
model), an invalid spec with no earlier registration shows FailedToLoad, and a failure
other than a load failure keeps its time while it stays the same (no status churn).
`status_patch` turns a desired status into a merge patch that also clears fields that
went away. Callers: the kopf InferenceService handlers and the registry-watch refresher.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mmesh.core.failures import DEFAULT_FAILURE_EXPIRY_MS, is_live
from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.numbers import whole_number
from mmesh.core.records import CopyState, ModelRecord, VModelRecord
from mmesh.operator.errors import FailureReason, InvalidSpec
from mmesh.operator.service import Endpoints

FAILURE_EXPIRY_ENV = "MM_LOAD_FAILURE_EXPIRY_TIME_MS"
RUNTIME_WAIT_MESSAGE = "Waiting for supporting runtime Pod to become available"
PREDICTOR_READY = "PredictorReady"
READY = "Ready"
MANAGED_STATUS_KEYS = ("url", "components", "modelStatus", "conditions")
"""Top-level status keys this module owns (kopf keeps its own keys next to them)."""


class ModelState(enum.StrEnum):
    PENDING = "Pending"
    STANDBY = "Standby"
    LOADING = "Loading"
    LOADED = "Loaded"
    FAILED_TO_LOAD = "FailedToLoad"


class TransitionStatus(enum.StrEnum):
    UP_TO_DATE = "UpToDate"
    IN_PROGRESS = "InProgress"
    BLOCKED_BY_FAILED_LOAD = "BlockedByFailedLoad"
    INVALID_SPEC = "InvalidSpec"


_PLACEMENT_REASONS = (FailureReason.NO_SUPPORTING_RUNTIME, FailureReason.RUNTIME_NOT_RECOGNIZED)


@dataclass(frozen=True, slots=True)
class FailureInfo:
    reason: FailureReason
    message: str
    model_id: str | None = None
    location: str | None = None
    time_ms: int | None = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason.value, "message": self.message}
        if self.location:
            out["location"] = self.location
        if self.model_id:
            out["modelRevisionName"] = self.model_id
        if self.time_ms is not None:
            out["time"] = rfc3339(self.time_ms)
        return out


@dataclass(frozen=True, slots=True)
class ModelView:
    """One concrete model as the status shows it."""

    model_id: ModelId | None
    state: ModelState
    total_copies: int = 0
    failed_copies: int = 0
    failure: FailureInfo | None = None
    min_copies: int = 0


@dataclass(frozen=True, slots=True)
class Observation:
    """What the shell knows about one InferenceService."""

    vmodel: VModelRecord | None
    """The vmodel record; None until the operator registers it (or after deletion)."""
    models: Mapping[ModelId, ModelRecord] = field(default_factory=dict)
    """Records of the vmodel's active and target models (missing ones are simply absent)."""
    model_id: ModelId | None = None
    """The concrete id the current spec translates to (None when translation failed)."""
    problem: InvalidSpec | None = None
    """Translation or runtime-selection error for the current spec."""
    waiting_for_runtime: bool = False
    """Runtimes support the model but none of their pods is up (scaled to zero, starting)."""


def decode_model(
    model_id: ModelId, record: ModelRecord | None, *, now_ms: int, failure_expiry_ms: int
) -> ModelView:
    """State, copy counts and latest live load failure of one model."""
    if record is None:
        return ModelView(model_id, ModelState.PENDING)
    states = record.copy_states()
    live_failures = sorted(
        ((record.failed_in[iid], iid) for iid, s in states.items() if s is CopyState.FAILED),
        reverse=True,
    )
    live_failures = [
        (t, i) for t, i in live_failures if is_live(t, now_ms=now_ms, expiry_ms=failure_expiry_ms)
    ]
    counts = {s: sum(1 for v in states.values() if v is s) for s in CopyState}
    return ModelView(
        model_id,
        _overall(counts, bool(live_failures)),
        total_copies=counts[CopyState.LOADED] + counts[CopyState.LOADING] + len(live_failures),
        failed_copies=len(live_failures),
        failure=_load_failure(model_id, record, live_failures[0]) if live_failures else None,
        min_copies=record.min_copies,
    )


def failure_expiry_ms(router_env: Mapping[str, str]) -> int:
    """The routers' failure expiry: MM_LOAD_FAILURE_EXPIRY_TIME_MS of the environment the
    operator gives them (`internalModelMeshEnvVars`), else their default."""
    text = router_env.get(FAILURE_EXPIRY_ENV, "").strip()
    return whole_number(text) or DEFAULT_FAILURE_EXPIRY_MS


def next_change_ms(
    observation: Observation, *, now_ms: int, failure_expiry_ms: int = DEFAULT_FAILURE_EXPIRY_MS
) -> int | None:
    """When the status changes with no record changing: the earliest expiry of a live load
    failure (FailedToLoad turns Standby, failedCopies drops). None if nothing expires."""
    expiries = [
        at + failure_expiry_ms
        for record in observation.models.values()
        for iid, state in record.copy_states().items()
        if state is CopyState.FAILED
        for at in (record.failed_in[iid],)
        if is_live(at, now_ms=now_ms, expiry_ms=failure_expiry_ms)
    ]
    return min(expiries, default=None)


def _overall(counts: Mapping[CopyState, int], failed: bool) -> ModelState:
    if counts[CopyState.LOADED]:
        return ModelState.LOADED
    if counts[CopyState.LOADING]:
        return ModelState.LOADING
    return ModelState.FAILED_TO_LOAD if failed else ModelState.STANDBY


def _load_failure(
    model_id: ModelId, record: ModelRecord, latest: tuple[int, InstanceId]
) -> FailureInfo:
    time_ms, iid = latest
    message = record.failures.get(iid) or "model load failed"
    return FailureInfo(FailureReason.MODEL_LOAD_FAILED, message, model_id, iid, time_ms)


# ---------------------------------------------------------------- the whole status


@dataclass(frozen=True, slots=True)
class _Decoded:
    active: ModelView
    target: ModelView | None
    transition: TransitionStatus

    @property
    def current(self) -> ModelView:
        """The model the spec asks for: the target while a transition runs."""
        return self.target or self.active


def decode_status(
    observation: Observation,
    *,
    endpoints: Endpoints,
    now_ms: int,
    failure_expiry_ms: int = DEFAULT_FAILURE_EXPIRY_MS,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full status for the InferenceService (`previous` keeps condition/failure times)."""
    decoded = _with_problems(_decode_records(observation, now_ms, failure_expiry_ms), observation)
    failure = _failure(decoded, observation)
    failure = _stable_failure_time(failure, _previous_failure(previous), now_ms)
    available = _is_available(decoded)
    status: dict[str, Any] = {
        "modelStatus": _model_status(decoded, failure),
        "conditions": _conditions(available, decoded, failure, previous, now_ms),
    }
    if available:
        status["url"] = endpoints.grpc_url
        status["components"] = {"predictor": _predictor_urls(endpoints)}
    return status


def _decode_records(observation: Observation, now_ms: int, expiry_ms: int) -> _Decoded:
    vmodel = observation.vmodel
    if vmodel is None:
        return _Decoded(ModelView(None, ModelState.PENDING), None, TransitionStatus.UP_TO_DATE)

    def view(model_id: ModelId) -> ModelView:
        record = observation.models.get(model_id)
        return decode_model(model_id, record, now_ms=now_ms, failure_expiry_ms=expiry_ms)

    if not vmodel.in_transition:
        return _Decoded(view(vmodel.active_model), None, TransitionStatus.UP_TO_DATE)
    transition = (
        TransitionStatus.BLOCKED_BY_FAILED_LOAD
        if vmodel.target_failed
        else TransitionStatus.IN_PROGRESS
    )
    return _Decoded(view(vmodel.active_model), view(vmodel.target_model), transition)


def _with_problems(decoded: _Decoded, observation: Observation) -> _Decoded:
    """Apply what the operator knows about runtimes to the model the spec asks for."""
    current = _runtime_outlook(decoded.current, observation)
    if decoded.target is None:
        decoded = replace(decoded, active=current)
    else:
        decoded = replace(decoded, target=current)
    blocked = decoded.transition is TransitionStatus.BLOCKED_BY_FAILED_LOAD
    if blocked and current.state is ModelState.LOADING:  # retrying: shown as in progress
        decoded = replace(decoded, transition=TransitionStatus.IN_PROGRESS)
    problem = observation.problem
    if problem is not None and problem.reason is FailureReason.INVALID_PREDICTOR_SPEC:
        decoded = replace(decoded, transition=TransitionStatus.INVALID_SPEC)
        if observation.vmodel is None:
            decoded = replace(decoded, active=ModelView(None, ModelState.FAILED_TO_LOAD))
    return decoded


def _runtime_outlook(view: ModelView, observation: Observation) -> ModelView:
    if view.state in (ModelState.LOADED, ModelState.LOADING):
        return view  # a pod has (or is getting) a copy: runtimes are evidently there
    problem = observation.problem
    if problem is not None and problem.reason in _PLACEMENT_REASONS:
        info = FailureInfo(problem.reason, problem.message, view.model_id)
        return ModelView(
            view.model_id, ModelState.FAILED_TO_LOAD, failure=info, min_copies=view.min_copies
        )
    if observation.waiting_for_runtime:
        info = FailureInfo(FailureReason.RUNTIME_UNHEALTHY, RUNTIME_WAIT_MESSAGE, view.model_id)
        state = ModelState.PENDING if view.state is ModelState.PENDING else ModelState.LOADING
        return ModelView(view.model_id, state, failure=info, min_copies=view.min_copies)
    return view


def _failure(decoded: _Decoded, observation: Observation) -> FailureInfo | None:
    problem = observation.problem
    if problem is not None and problem.reason is FailureReason.INVALID_PREDICTOR_SPEC:
        return FailureInfo(problem.reason, problem.message, observation.model_id)
    current = decoded.current
    return None if current.state is ModelState.LOADED else current.failure


def _stable_failure_time(
    failure: FailureInfo | None, previous: Mapping[str, Any] | None, now_ms: int
) -> FailureInfo | None:
    """Load failures carry their own time; others keep the previous time while unchanged."""
    if failure is None or failure.time_ms is not None:
        return failure
    if previous is not None and _same_failure(failure, previous):
        time_ms = parse_rfc3339(str(previous.get("time", "")))
        if time_ms is not None:
            return replace(failure, time_ms=time_ms)
    return replace(failure, time_ms=now_ms)


def _same_failure(failure: FailureInfo, previous: Mapping[str, Any]) -> bool:
    return (
        previous.get("reason") == failure.reason.value
        and previous.get("message") == failure.message
        and previous.get("modelRevisionName") == (failure.model_id or None)
    )


def _previous_failure(previous: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    info = ((previous or {}).get("modelStatus") or {}).get("lastFailureInfo")
    return info if isinstance(info, Mapping) else None


def _is_available(decoded: _Decoded) -> bool:
    if decoded.active.state in (ModelState.PENDING, ModelState.FAILED_TO_LOAD):
        return False
    waiting = decoded.active.failure is not None and (
        decoded.active.failure.reason is FailureReason.RUNTIME_UNHEALTHY
    )
    return not waiting


def _model_status(decoded: _Decoded, failure: FailureInfo | None) -> dict[str, Any]:
    views = [decoded.active] + ([decoded.target] if decoded.target else [])
    out: dict[str, Any] = {
        "transitionStatus": decoded.transition.value,
        "states": {
            "activeModelState": decoded.active.state.value,
            "targetModelState": decoded.target.state.value if decoded.target else "",
        },
        "copies": {
            "failedCopies": sum(v.failed_copies for v in views),
            "totalCopies": sum(v.total_copies for v in views),
        },
    }
    if decoded.current.min_copies:
        out["copies"]["minCopies"] = decoded.current.min_copies
    if failure is not None:
        out["lastFailureInfo"] = failure.to_status()
    return out


def _predictor_urls(endpoints: Endpoints) -> dict[str, str]:
    urls = {"url": endpoints.grpc_url, "grpcUrl": endpoints.grpc_url}
    if endpoints.rest_url:
        urls["restUrl"] = endpoints.rest_url
    return urls


def _conditions(
    available: bool,
    decoded: _Decoded,
    failure: FailureInfo | None,
    previous: Mapping[str, Any] | None,
    now_ms: int,
) -> list[dict[str, Any]]:
    """PredictorReady and Ready (Ready summarises the one dependent, knative-style)."""
    before = {
        c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, Mapping)
    }
    base: dict[str, Any] = {"status": "True" if available else "False"}
    if not available:
        base["reason"] = failure.reason.value if failure else decoded.active.state.value
        if failure is not None:
            base["message"] = failure.message
    return [_condition(kind, base, before.get(kind), now_ms) for kind in (PREDICTOR_READY, READY)]


def _condition(
    kind: str, base: Mapping[str, Any], before: Mapping[str, Any] | None, now_ms: int
) -> dict[str, Any]:
    changed = before is None or before.get("status") != base["status"]
    stamp = rfc3339(now_ms) if changed or before is None else before.get("lastTransitionTime")
    return {"type": kind, **base, "lastTransitionTime": stamp or rfc3339(now_ms)}


# ---------------------------------------------------------------- patches and times


def status_patch(previous: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `previous` to `desired` over the keys this module owns:
    fields that disappeared are set to None (deleted); lists are replaced whole."""
    patch = dict(desired)
    old = previous or {}
    for key in MANAGED_STATUS_KEYS:
        if key in old and key not in desired:
            patch[key] = None
        elif isinstance(old.get(key), Mapping) and isinstance(desired.get(key), Mapping):
            patch[key] = _removals(old[key], desired[key])
    return patch


def _removals(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            out[key] = _removals(old[key], value)
        else:
            out[key] = value
    return out


def rfc3339(epoch_ms: int) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), as Kubernetes writes times."""
    seconds = epoch_ms // 1000
    days, rest = divmod(seconds, 86_400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def parse_rfc3339(text: str) -> int | None:
    """Epoch ms of a `YYYY-MM-DDTHH:MM:SS[.frac]Z` time; None for anything else."""
    if len(text) < 20 or text[-1] != "Z" or text[4] != "-" or text[10] != "T":
        return None
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    except ValueError:
        return None
    days = _days_from_civil(year, month, day)
    return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # Days since 1970-01-01 -> proleptic Gregorian (year, month, day), H. Hinnant's method;
    # done by hand because pure modules do not import clock modules.
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
