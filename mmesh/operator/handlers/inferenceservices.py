"""InferenceService handlers: register in etcd, unregister on delete, report status.

Only InferenceServices annotated `serving.kserve.io/deploymentMode: ModelMesh` are ours.
Create/update/resume are one level-triggered reconcile: parse, translate, upsert the vmodel
and model records, ask for a namespace reconcile (runtime scale-from-zero), wake the status
reporter. Delete (behind a finalizer) removes the records. The status is written by one
daemon per InferenceService, woken by the registry watch (and by the handlers): it reads
the records, decodes the reference status and merge-patches it when it changed. While a
model is Loading it re-reads every second (no etcd event marks a load that only takes time).
Only the leader registers and patches statuses (followers' reporters only watch). etcd
being unreachable is a kopf TemporaryError (retried every 2 s) in the handlers, and a
retry in the reporters. Events: Registered, the InvalidSpec reason, Loaded, FailedToLoad.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf

from mmesh.core import clock
from mmesh.core.errors import StoreUnavailable
from mmesh.core.ids import VModelId
from mmesh.core.mappings import deep_merge
from mmesh.operator import status as st
from mmesh.operator.errors import FailureReason, InvalidSpec, KubeUnavailable
from mmesh.operator.handlers import events
from mmesh.operator.handlers.lifecycle import (
    ANNOTATIONS_PREFIX,
    LAST_HANDLED_ANNOTATION,
    Context,
    context,
    leading,
    managed,
    touch_isvc,
)
from mmesh.operator.handlers.runtimes import RETRY_S, Indexes, namespace_sync
from mmesh.operator.naming import ISVC_SOURCE
from mmesh.operator.resources import (
    DEPLOYMENT_MODE_ANNOTATION,
    GROUP,
    ISVC_VERSION,
    MODELMESH_DEPLOYMENT_MODE,
    InferenceService,
)
from mmesh.operator.runtime_selection import Requirement, unsupported
from mmesh.operator.service import endpoints
from mmesh.operator.translation import Registration, to_registration

logger = logging.getLogger(__name__)

ISVC = (GROUP, ISVC_VERSION, "inferenceservices")
MODELMESH = {DEPLOYMENT_MODE_ANNOTATION: MODELMESH_DEPLOYMENT_MODE}
IDLE_RECHECK_S = 10.0
"""Re-read now and then even without events: a safety net under the registry watch (a load
failure's expiry, the other change that comes without an event, has its own wake-up)."""
EXPIRY_SLACK_S = 0.2
"""Look again this long after a failure expires (clocks tick; the record says ms)."""
API_RETRY_S = 1.0
"""How soon a status reporter patches again after the Kubernetes API did not take it."""
ETCD_RETRY_S = 2.0
"""How soon a handler or status reporter tries again while etcd is unreachable."""
FOLLOWER_DELETE_RECHECK_S = 0.5
FOLLOWER_DELETE_WAIT_S = 30.0
"""How often, and how long at a time, a follower looks whether the leader has removed a
deleted InferenceService's records before it lets the object go."""
UNHANDLED_NUDGE_S = 3.0
"""How long the leader lets an InferenceService wait for its first reconcile before it
touches it (and then again at this interval) so that kopf looks at it again."""


def _translate(body: Mapping[str, Any]) -> Registration:
    return to_registration(InferenceService.from_body(body))


@kopf.index(*ISVC, annotations=MODELMESH)
def isvc_idx(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Requirement]:
    """namespace -> requirement of every live, valid ModelMesh InferenceService.

    An empty mapping takes the object out of the index; None would keep its last value
    (kopf's rule), so a deleted or broken InferenceService would keep its runtime up.
    """
    if body.get("metadata", {}).get("deletionTimestamp"):
        return {}  # on its way out: no longer keeps runtimes up
    try:
        return {namespace or "": _translate(body).requirement}
    except InvalidSpec:
        return {}


@kopf.on.create(*ISVC, annotations=MODELMESH, when=leading, backoff=RETRY_S)
@kopf.on.update(*ISVC, annotations=MODELMESH, when=leading, backoff=RETRY_S)
@kopf.on.resume(*ISVC, annotations=MODELMESH, when=leading, backoff=RETRY_S)
async def reconcile_isvc(
    body: kopf.Body, name: str, namespace: str | None, memo: Any, **kwargs: Any
) -> None:
    ctx, namespace = context(memo), namespace or ""
    try:
        registration = _translate(body)  # parse + decide
        vmodel = await ctx.registrations.upsert(registration, ctx.service_name)  # act
    except InvalidSpec as exc:  # the status reporter shows it; retrying cannot help
        logger.warning("InferenceService %s/%s: %s", namespace, name, exc.message)
        events.post(body, type=events.WARNING, reason=exc.reason.value, message=exc.message)
    except StoreUnavailable as exc:
        raise kopf.TemporaryError(f"etcd unavailable: {exc}", delay=ETCD_RETRY_S) from exc
    else:
        if _spec_changed(kwargs):  # not on resume, nor on a leader's touch (metadata only)
            message = f"registered as vmodel {name} targeting model {vmodel.target_model}"
            events.post(body, type=events.NORMAL, reason=events.REGISTERED, message=message)
    namespace_sync(ctx).request(namespace, Indexes.of(kwargs))
    ctx.wakeups.wake(namespace, name)  # report


@kopf.on.delete(*ISVC, annotations=MODELMESH, when=leading, backoff=RETRY_S)
async def unregister_isvc(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    ctx, namespace = context(memo), namespace or ""
    try:
        await ctx.registrations.delete(namespace, VModelId(name), ctx.service_name, ISVC_SOURCE)
    except StoreUnavailable as exc:
        raise kopf.TemporaryError(f"etcd unavailable: {exc}", delay=ETCD_RETRY_S) from exc
    namespace_sync(ctx).request(namespace, Indexes.of(kwargs))
    logger.info("InferenceService %s/%s unregistered", namespace, name)


async def _hold_for_the_leader(ctx: Context, namespace: str, name: str) -> None:
    """A follower's reporter, stopped because its InferenceService is being deleted, returns
    once the leader has removed the records (or this replica leads, or the wait is up).

    kopf keeps the shared finalizer while any daemon of the object still runs, and removes
    it once none of its handlers needs it: without this wait the follower took it off at
    once, and the object could be gone before the leader saw it being deleted, its records
    left behind."""
    deadline = time.monotonic() + FOLLOWER_DELETE_WAIT_S
    while not ctx.leads and time.monotonic() < deadline:
        with contextlib.suppress(StoreUnavailable):  # etcd away: look again
            vmodel, _ = await ctx.registrations.observe(namespace, VModelId(name), ctx.service_name)
            if vmodel is None or vmodel.owner not in ("", ISVC_SOURCE):
                return
        await asyncio.sleep(FOLLOWER_DELETE_RECHECK_S)


@kopf.daemon(
    *ISVC,
    annotations=MODELMESH,
    when=managed,
    cancellation_backoff=FOLLOWER_DELETE_WAIT_S + 5.0,
    backoff=5.0,
)
async def report_status(
    body: kopf.Body, name: str, namespace: str | None, memo: Any, stopped: Any, **kwargs: Any
) -> None:
    ctx, namespace = context(memo), namespace or ""
    wake, stop = ctx.wakeups.register(namespace, name), asyncio.ensure_future(stopped.wait())
    sent: dict[str, Any] = {}
    shown = _active_state(body.get("status") or {})
    next_nudge = 0.0
    try:
        while not stopped:
            wake.clear()
            previous = _managed_status(body.get("status") or {})
            try:
                desired, recheck_s = await observe_status(ctx, body, Indexes.of(kwargs))
            except StoreUnavailable as exc:  # keep the last status; the watch wakes us later
                logger.warning("status of %s/%s: etcd unavailable (%s)", namespace, name, exc)
                await _wait(wake, stop, ETCD_RETRY_S)
                continue
            if not ctx.leads:  # a follower only watches
                await _wait(wake, stop, IDLE_RECHECK_S)
                continue
            if unhandled_for(body, time.time()) >= UNHANDLED_NUDGE_S:
                if time.monotonic() >= next_nudge:
                    next_nudge = time.monotonic() + UNHANDLED_NUDGE_S
                    await _nudge(ctx, namespace, name)
                recheck_s = min(recheck_s, UNHANDLED_NUDGE_S)
            # `body` may not show our last patch yet (a status going A -> B -> A would look
            # unchanged next to it): once we have patched, what we sent is what the API holds.
            if desired != (sent or previous):
                patch = st.status_patch(deep_merge(previous, sent), desired)
                try:
                    patched = await asyncio.to_thread(
                        ctx.kube.patch_isvc_status, namespace, name, patch
                    )
                except KubeUnavailable as exc:  # not the daemon's end: kopf would wait 60 s
                    logger.warning("%s; trying again in %.0f s", exc.message, API_RETRY_S)
                    await _wait(wake, stop, API_RETRY_S)
                    continue
                if not patched:
                    return  # act + report; the object is gone
                sent = desired
            shown = _announce(body, desired, shown)
            await _wait(wake, stop, recheck_s)
        if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            await _hold_for_the_leader(ctx, namespace, name)
    finally:
        stop.cancel()
        ctx.wakeups.unregister(namespace, name)


def unhandled_for(body: Mapping[str, Any], now_s: float) -> float:
    """Seconds since the InferenceService was created while kopf has never finished its
    handlers (no last-handled annotation) nor started the reconcile; 0 once it has, or
    while it is being deleted.

    Two replicas add the finalizer to a new object at once; when both patches lose to a
    third write, kopf keeps the failed one for its next cycle, runs no handler in that
    cycle and sends nothing, so the object waits for some other event (seen with two
    replicas under load: the create was never reconciled)."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if LAST_HANDLED_ANNOTATION in annotations or RECONCILE_PROGRESS_ANNOTATION in annotations:
        return 0.0  # handled, or kopf is running (or retrying) the reconcile
    created = meta.get("creationTimestamp")
    if meta.get("deletionTimestamp") or not created:
        return 0.0
    try:
        created_s = datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, now_s - created_s)


RECONCILE_PROGRESS_ANNOTATION = f"{ANNOTATIONS_PREFIX}/reconcile_isvc"
"""kopf's record of the reconcile handler while it runs or waits to be retried."""


async def _nudge(ctx: Context, namespace: str, name: str) -> None:
    """Touch the InferenceService so kopf handles it again."""
    logger.warning(
        "InferenceService %s/%s has not been reconciled since its creation; touching it",
        namespace,
        name,
    )
    try:
        await touch_isvc(ctx, namespace, name)
    except Exception:  # the next nudge tries again
        logger.exception("touching InferenceService %s/%s failed", namespace, name)


# ---------------------------------------------------------------- status helpers


async def observe_status(
    ctx: Context, body: Mapping[str, Any], indexes: Indexes
) -> tuple[dict[str, Any], float]:
    """The status the InferenceService should show now, and how soon to look again without
    an event: every second while a model is Loading, at the next failure expiry, else the
    idle recheck."""
    meta = body.get("metadata", {})
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    problem, registration, waiting = None, None, False
    try:
        registration = _translate(body)
        problem = unsupported(registration.requirement, indexes.runtimes_of(namespace))
        if problem is None:
            labels = registration.requirement.labels
            waiting = not ctx.registrations.has_instance_for(namespace, ctx.service_name, labels)
    except InvalidSpec as exc:
        problem = exc
    vmodel, models = await ctx.registrations.observe(namespace, VModelId(name), ctx.service_name)
    if vmodel is not None and vmodel.owner not in ("", ISVC_SOURCE):
        problem = InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, _foreign(name, vmodel.owner))
        vmodel, models = None, {}
    observation = st.Observation(
        vmodel,
        models,
        model_id=registration.model_id if registration else None,
        problem=problem,
        waiting_for_runtime=waiting,
    )
    now = clock.now_ms()
    expiry_ms = st.failure_expiry_ms(
        {e.name: e.value for e in ctx.config.internal_model_mesh_env_vars}
    )
    desired = st.decode_status(
        observation,
        endpoints=endpoints(ctx.config, namespace),
        now_ms=now,
        failure_expiry_ms=expiry_ms,
        previous=_managed_status(body.get("status") or {}),
    )
    if st.ModelState.LOADING.value in desired["modelStatus"]["states"].values():
        return desired, ctx.settings.status_repoll_s
    expires = st.next_change_ms(observation, now_ms=now, failure_expiry_ms=expiry_ms)
    if expires is None:
        return desired, IDLE_RECHECK_S
    return desired, min(IDLE_RECHECK_S, (expires - now) / 1000 + EXPIRY_SLACK_S)


def _spec_changed(kwargs: Mapping[str, Any]) -> bool:
    """Whether the handler runs for a new InferenceService or a change of its spec."""
    if str(kwargs.get("reason")) == "create":
        return True
    return str(kwargs.get("reason")) == "update" and any(
        tuple(item[1])[:1] == ("spec",) for item in kwargs.get("diff") or ()
    )


def _active_state(status: Mapping[str, Any]) -> str:
    return str(status.get("modelStatus", {}).get("states", {}).get("activeModelState", ""))


def _announce(body: Mapping[str, Any], desired: Mapping[str, Any], shown: str) -> str:
    """Post an Event when the active model becomes Loaded or FailedToLoad; the new state."""
    state = _active_state(desired)
    if state == shown:
        return state
    model_status = desired.get("modelStatus", {})
    if state == st.ModelState.LOADED.value:
        copies = model_status.get("copies", {}).get("totalCopies", 0)
        message = f"model loaded ({copies} copies)"
        events.post(body, type=events.NORMAL, reason=events.LOADED, message=message)
    elif state == st.ModelState.FAILED_TO_LOAD.value:
        info = model_status.get("lastFailureInfo", {})
        message = f"{info.get('reason', 'ModelLoadFailed')}: {info.get('message', '')}"
        events.post(body, type=events.WARNING, reason=events.FAILED_TO_LOAD, message=message)
    return state


def _foreign(name: str, owner: str) -> str:
    return f"vmodel {name} already exists with the same name from a different source ({owner!r})"


def _managed_status(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(status[k]) for k in st.MANAGED_STATUS_KEYS if k in status}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _wait(event: asyncio.Event, stop: asyncio.Future[Any], seconds: float) -> None:
    """Until the event is set, the daemon is told to stop, or `seconds` pass."""
    woken = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({woken, stop}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
