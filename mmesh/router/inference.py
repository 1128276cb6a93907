"""The data plane: route one inference call to the model it names and forward its bytes.

The model id comes from field 1 of the request (ModelInfer, ModelMetadata: read as a
vmodel id first, then as a model id) or from the `mm-model-id` / `mm-vmodel-id` headers.
Everything is read from memory: the registry mirror and the local cache; no etcd call.
A name the mirror does not know is checked against the id rules before it is reported
as not found (INVALID_ARGUMENT for `a/b`, '..', control characters, overlong names);
names the mirror knows passed those rules when they were registered. Each model may have
at most MM_MAX_INFLIGHT_PER_MODEL requests in flight through this router (0: no bound).

A request for a model not loaded here is a thin loop: `routing.decide` says where it goes
(serve here, forward, wait for a load, place a new copy, refuse), `_act` does it, and a
failure goes back into the next decision: the instance is excluded for this request, or,
when it disowned the copy the registry claims for it ("not held"), that claim is removed
(compare-and-swap) and the request is routed again. The only etcd writes on this path are
those repairs and the loads themselves; a warm request makes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import NamedTuple

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId
from mmesh.core.labels import required_labels
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.core.records import InstanceRecord, ModelRecord, bytes_to_units
from mmesh.router import peers, wire
from mmesh.router.cluster import ClusterView
from mmesh.router.departed import RecentDepartures
from mmesh.router.errors import (
    CopyNotHeld,
    InvalidRequest,
    LoadFailed,
    ModelNotFound,
    ModelNotHere,
    NoCapacity,
    RouterError,
    RuntimeUnavailable,
    TooManyRequests,
    Unimplemented,
    checked_model_id,
    checked_vmodel_id,
)
from mmesh.router.forwarding import Forwarder
from mmesh.router.healer import Healer
from mmesh.router.inflight import InflightLimiter
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.peers import PeerPool
from mmesh.router.placed import Placement, Placements
from mmesh.router.registry import Registry
from mmesh.router.routing import (
    Decision,
    Hops,
    PlaceAt,
    Refuse,
    RefuseKind,
    ServeHere,
    View,
    decide,
    decide_forwarded,
    load_failed,
    load_failures,
    place,
    stale_self_claim,
    worth_waiting,
)
from mmesh.router.usage import Usage

logger = logging.getLogger(__name__)

MODEL_ID_HEADER = "mm-model-id"
VMODEL_ID_HEADER = "mm-vmodel-id"
LEGACY_MODEL_ID_HEADER = "tas-model-id"

ENSURE_LOADED = "/mmesh.ModelMesh/ensureLoaded"
PLACEMENT_PAUSE_S = 0.2
MAX_PLACEMENT_PAUSE_S = 1.0
"""How long a call that found nowhere to load waits before it decides again (doubling)."""
DEADLINE_MARGIN_S = 0.5
"""A call stops waiting this long before its deadline, to answer with the real cause."""
MIN_CALL_TIMEOUT_S = 0.001
"""A call made with its deadline all but spent still goes out with a positive limit (gRPC
takes 0 as no limit), and ends DEADLINE_EXCEEDED there."""


# Methods whose request names the model in a field: (field path, read as vmodel id first).
ID_EXTRACTION: Mapping[str, tuple[int, ...]] = {
    "/inference.GRPCInferenceService/ModelInfer": (1,),
    "/inference.GRPCInferenceService/ModelMetadata": (1,),
}


def _named_in(method: str, payload: bytes) -> str | None:
    """The model name the request's payload gives (None for methods that give none)."""
    path = ID_EXTRACTION.get(method)
    return wire.read_string_field(payload, path) if path else None


def _header(headers: Mapping[str, str | bytes], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(f"{name}-bin")
        if value is None:
            return None
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"header {name}: not UTF-8 text") from None


class InferenceRouter:
    def __init__(
        self,
        *,
        registry: Registry,
        cluster: ClusterView,
        local: LocalModels,
        forwarder: Forwarder,
        metrics: RouterMetrics,
        healer: Healer,
        usage: Usage,
        pool: PeerPool,
        self_record: Callable[[], InstanceRecord],
        inflight: InflightLimiter,
        departures: peers.Departures,
        departed: RecentDepartures,
    ) -> None:
        self.healer = healer
        self.departures = departures
        """Ends calls to a peer that went away (a registry listener, wired by the app)."""
        self.departed = departed
        """Peers that left lately (a registry listener): worth waiting for when no live
        instance may load a model."""
        self.usage = usage
        self.registry = registry
        self.cluster = cluster
        self.local = local
        self.forwarder = forwarder
        self.metrics = metrics
        self.pool = pool
        self.self_record = self_record
        """This instance's record from its current state (the published one may lag)."""
        self.inflight = inflight
        self._placed = Placements()
        info = local.info
        self._default_units = bytes_to_units(info.default_model_size_bytes)
        self._injection = {f"/{m}": path for m, path in info.id_injection.items()}
        self._allow_any = info.allow_any_method

    def resolve(
        self, method: str, payload: bytes, headers: Mapping[str, str | bytes]
    ) -> tuple[str, ModelRecord]:
        """The concrete model id a call is for, and its record."""
        return self._resolve_named(method, _named_in(method, payload), headers)

    def _resolve_named(
        self, method: str, name: str | None, headers: Mapping[str, str | bytes]
    ) -> tuple[str, ModelRecord]:
        """`resolve` with the name the payload gives (`_named_in`) already read."""
        model_header = _header(headers, MODEL_ID_HEADER) or _header(headers, LEGACY_MODEL_ID_HEADER)
        vmodel_header = _header(headers, VMODEL_ID_HEADER)
        if model_header and vmodel_header:
            raise InvalidRequest("only one of mm-model-id and mm-vmodel-id may be set")
        path = ID_EXTRACTION.get(method)
        if name:
            return self._by_name(name)
        if vmodel_header:
            return self._by_vmodel(vmodel_header)
        if model_header:
            return self._by_model(model_header)
        raise InvalidRequest(
            f"{method} must include the mm-model-id or mm-vmodel-id header"
            if path is None
            else f"{method}: model name is empty"
        )

    def _by_name(self, name: str) -> tuple[str, ModelRecord]:
        if self.registry.vmodels.get(name) is not None:
            return self._by_vmodel(name)
        return self._by_model(name)

    def _by_vmodel(self, vmodel_id: str) -> tuple[str, ModelRecord]:
        vmodel = self.registry.vmodels.get(vmodel_id)
        if vmodel is None:
            raise ModelNotFound(f"vmodel {checked_vmodel_id(vmodel_id)} not found")
        return self._by_model(vmodel.active_model)

    def _by_model(self, model_id: str) -> tuple[str, ModelRecord]:
        record = self.registry.models.get(model_id)
        if record is None:
            raise ModelNotFound(f"model {checked_model_id(model_id)} not found")
        return model_id, record

    async def invoke(
        self,
        method: str,
        payload: bytes,
        headers: Mapping[str, str | bytes],
        timeout_s: float | None = None,
    ) -> bytes:
        name = _named_in(method, payload)  # read once: resolving and injecting both need it
        model_id, _ = self._resolve_named(method, name, headers)
        try:
            return await self._invoke_model(method, model_id, payload, headers, timeout_s, name)
        except RouterError:
            moved_to = self._moved_on(method, payload, headers, model_id)
            if moved_to is None:
                raise
        # A vmodel switched targets while this request was on its way and the old model is
        # gone: the request goes, once, to the model the vmodel names now.
        logger.info("model %s was replaced by %s during the request; retrying", model_id, moved_to)
        return await self._invoke_model(method, moved_to, payload, headers, timeout_s)

    def _moved_on(
        self, method: str, payload: bytes, headers: Mapping[str, str | bytes], model_id: str
    ) -> str | None:
        """The model the request's name resolves to now, if `model_id` is no longer registered
        and the name (a vmodel) points elsewhere; None otherwise."""
        if self.registry.models.get(model_id) is not None:
            return None
        try:
            now_id, _ = self.resolve(method, payload, headers)
        except RouterError:
            return None
        return now_id if now_id != model_id else None

    def _invoke_model(
        self,
        method: str,
        model_id: str,
        payload: bytes,
        headers: Mapping[str, str | bytes],
        timeout_s: float | None,
        named: str | None = None,
    ) -> Awaitable[bytes]:
        """The routing of one call, to be awaited (returned, not awaited here: one frame
        less to resume on every request). `named`: the name the payload gives, when already
        read (then an injection into that same field is needed only if it differs)."""
        path = self._injection.get(method)
        if path is None and not self._allow_any and method not in ID_EXTRACTION:
            raise Unimplemented(f"method {method} is not served by this runtime")
        extraction = ID_EXTRACTION.get(method)
        if path is not None and not (named == model_id and path == extraction):
            payload = wire.replace_string_field(payload, path, model_id)
        names_model = named == model_id or (path is not None and path == extraction)
        expires_at = None if timeout_s is None else time.monotonic() + timeout_s
        call = _Call(method, model_id, payload, headers, expires_at, names_model)
        hop = peers.hop_of(headers)
        if hop.hops:
            return self._serve_forwarded(call, hop)
        if self.inflight.bounded:
            return self._route_admitted(call)
        return self._route(call)

    async def _route_admitted(self, call: _Call) -> bytes:
        """`_route` for a request the model's in-flight bound has room for."""
        if not self.inflight.try_enter(call.model_id):
            limit = self.inflight.limit
            raise TooManyRequests(
                f"model {call.model_id} already has {limit} requests in flight on this "
                f"router, its limit (MM_MAX_INFLIGHT_PER_MODEL={limit}); retry later"
            )
        try:
            return await self._route(call)
        finally:
            self.inflight.leave(call.model_id)

    async def call(self, method: str, request: bytes, headers: Mapping[str, str]) -> bytes:
        """The REST face's entry: the same path as a gRPC call."""
        return await self.invoke(method, request, headers)

    async def _serve_forwarded(self, call: _Call, hop: peers.Hop) -> bytes:
        """A peer sent this request here: serve it from the local copy, or load one when the
        peer placed a new copy here; never forward again. A request for a copy this router
        does not hold is refused as "not held", after dropping its own stale claim."""
        hops = _hops(call.headers, hop)
        local = self.local.copy_state(call.model_id)
        decision = decide_forwarded(call.model_id, self.local.instance_id, local, hops)
        if isinstance(decision, Refuse):
            record = self._record(call.model_id)
            if decision.kind is RefuseKind.NOT_HELD and stale_self_claim(
                record, self.local.instance_id, local
            ):
                await self.healer.drop_own_stale_claim(call.model_id)
            raise _refusal(decision)
        return await self._serve_local(call, hops.exclude)

    async def _route(self, call: _Call) -> bytes:
        """Decide, act, and on a failure decide again: an instance that failed is excluded
        for this call; one that disowned its claimed copy loses the claim instead. When no
        instance may load the model only for reasons that pass (instances restarting or
        shutting down, transient failures), the call waits a little and decides again,
        within its deadline and the load timeout."""
        if self.local.is_loaded(call.model_id):  # the warm path: nothing to decide
            with contextlib.suppress(ModelNotHere, RuntimeUnavailable):
                return await self._serve_local(call)
        exclude: set[str] = set()
        disowned: set[str] = set()
        ruled_out: set[str] = set()
        last_error: RouterError | None = None
        me = self.local.instance_id
        tried: dict[str, RouterError] = {}
        wait_until = time.monotonic() + self._wait_budget_s(call)
        pause = PLACEMENT_PAUSE_S
        balanced = peers.is_balanced(call.headers)
        iterations = 0
        while iterations < peers.MAX_ITERATIONS:
            iterations += 1
            record = self._record(call.model_id)
            if stale_self_claim(record, me, self.local.copy_state(call.model_id)):
                record = await self.healer.drop_own_stale_claim(call.model_id) or record
            hops = (
                Hops(balanced=balanced, exclude=frozenset(exclude))
                if balanced or exclude
                else _CLIENT_HOPS
            )
            view = self._view(call.model_id)
            decision = decide(call.model_id, record, view, hops)
            if isinstance(decision, Refuse) and decision.kind is RefuseKind.LOAD_FAILED:
                seen = {iid: str(e) for iid, e in tried.items() if isinstance(e, LoadFailed)}
                decision = load_failed(call.model_id, load_failures(record, view, seen))
            if (
                isinstance(decision, Refuse)
                and decision.kind is RefuseKind.NO_CAPACITY
                and time.monotonic() + pause < wait_until
                and (worth_waiting(record, view, ruled_out) or bool(self._returning(record)))
            ):
                logger.info("model %s: %s; deciding again in %.2f s", call.model_id,
                            decision.reason, pause)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PLACEMENT_PAUSE_S)
                exclude &= ruled_out  # transient failures may have passed
                iterations = 0
                continue
            self._raise_if_returning(decision, record)
            try:
                return await self._act(call, decision, exclude)
            except _Attempt as failed:
                iid, error = failed.instance_id, failed.error
                logger.info("model %s on %s: %s", call.model_id, iid, error)
                seen_ms = record.instance_ids.get(InstanceId(iid))
                if isinstance(error, CopyNotHeld) and iid not in disowned and seen_ms:
                    disowned.add(iid)
                    await self.healer.drop_peer_claim(call.model_id, iid, seen_ms)
                else:
                    exclude.add(iid)
                    tried[iid] = error
                    if isinstance(error, (LoadFailed, NoCapacity)):
                        ruled_out.add(iid)
                last_error = error
            except NoCapacity as exc:
                raise _with_attempts(exc, call.model_id, tried) from exc
        raise RuntimeUnavailable(
            f"{peers.MAX_ITERATIONS} retry iterations exhausted for model {call.model_id}: "
            f"{last_error}"
        )

    def _returning(self, record: ModelRecord) -> list[str]:
        """Instances that may serve the model and left lately: they are likely restarting."""
        return self.departed.left_lately(required_labels(record.model_type))

    def _raise_if_returning(self, decision: Decision, record: ModelRecord) -> None:
        """Nowhere to load, and the wait is over, while instances that may serve the model
        left lately: UNAVAILABLE (they are restarting), naming them, not RESOURCE_EXHAUSTED."""
        if not isinstance(decision, Refuse) or decision.kind is not RefuseKind.NO_CAPACITY:
            return
        left = self._returning(record)
        if left:
            raise RuntimeUnavailable(
                f"{decision.reason}; {len(left)} instances that may serve it left within the "
                f"last {self.departed.window_s:.0f} s and are not back: {', '.join(left)}"
            )

    def _wait_budget_s(self, call: _Call) -> float:
        """How long a call may wait for somewhere to load: the load timeout, and never past
        the call's own deadline (less a margin to answer why)."""
        budget = self.local.info.load_timeout_ms / 1000
        if call.timeout_s is not None:
            budget = min(budget, call.timeout_s - DEADLINE_MARGIN_S)
        return budget

    async def _act(self, call: _Call, decision: Decision, exclude: set[str]) -> bytes:
        me = self.local.instance_id
        if isinstance(decision, Refuse):
            raise _refusal(decision)
        if isinstance(decision, ServeHere) or decision.instance_id == me:
            return await self._attempt(me, self._serve_local(call, exclude))
        target = decision.instance_id
        load = isinstance(decision, PlaceAt)
        placement = self._note_placement(target) if load else None
        try:
            return await self._attempt(target, self._forward(call, target, exclude, load=load))
        finally:
            if placement is not None:
                self._answered(placement)

    def _record(self, model_id: str) -> ModelRecord:
        record = self.registry.models.get(model_id)
        if record is None:
            raise ModelNotFound(f"model {model_id} not found")
        return record

    def _view(self, model_id: str) -> View:
        peers = self.cluster.others()
        if self._placed:  # copies this router placed lately, not yet in their pods' records
            now = time.monotonic()
            peers = {
                iid: self._placed.adjusted(iid, rec, self._revision(iid), now)
                for iid, rec in peers.items()
            }
        return View(
            me=self.local.instance_id,
            peers=peers,
            own=self.self_record,
            local=self.local.copy_state(model_id),
            size_units=self._default_units,
            now_ms=now_ms(),
            failure_expiry_ms=self.local.failure_expiry_ms,
            inflight=self.pool.inflight,
        )

    def _revision(self, iid: str) -> int | None:
        """The mod revision of the peer's instance record in the mirror."""
        held = self.registry.instances.items.get(iid)
        return held.mod_revision if held is not None else None

    def _note_placement(self, iid: str) -> Placement:
        """A copy this router is about to ask peer `iid` to load."""
        return self._placed.note(iid, self._default_units, time.monotonic())

    def _answered(self, placement: Placement) -> None:
        placement.answered(self._revision(placement.instance_id))

    async def _attempt(self, instance_id: str, work: Awaitable[bytes]) -> bytes:
        """Run one routing attempt; failures that another instance could avoid say where."""
        try:
            return await work
        except (ModelNotHere, RuntimeUnavailable, LoadFailed, NoCapacity) as exc:
            raise _Attempt(instance_id, exc) from exc

    async def _forward(self, call: _Call, target: str, exclude: set[str], *, load: bool) -> bytes:
        """To a peer router: it serves from its copy, or (`load`) loads one if it has none."""
        endpoint = self.registry.instances.get(target)
        if endpoint is None or not endpoint.endpoint:
            raise ModelNotHere(f"instance {target} publishes no endpoint")
        metadata = peers.hop_metadata(
            hops=0,
            dest=target,
            load=load,
            exclude=exclude,
            model_id=None if call.names_model else call.model_id,
        )
        metadata += _forwarded_metadata(call.headers, None)
        self.local.note_forwarded(call.model_id)
        forward = self.pool.call(
            target, endpoint.endpoint, call.method, call.payload, metadata, call.timeout_s
        )
        return await self.departures.watched(target, endpoint.start_time_ms, forward)

    async def _serve_local(self, call: _Call, unreachable: Collection[str] = ()) -> bytes:
        record = self.registry.models.get(call.model_id)
        if record is None:
            raise ModelNotFound(f"model {call.model_id} not found")
        metadata = _forwarded_metadata(call.headers, call.model_id)
        self.local.touch(call.model_id)
        await self._ensure_local(call.model_id, record, unreachable)
        self.usage.count(call.model_id)
        try:
            with self.local.in_use(call.model_id):  # a retiring copy unloads after this
                response = await self.forwarder.call(
                    call.method, call.payload, metadata, call.timeout_s
                )
        except RuntimeUnavailable:
            self.local.on_unreachable()  # down or starting: cold once it is back
            raise
        except ModelNotHere:
            # The runtime lost a copy this router holds: it may have lost them all.
            await self.healer.runtime_lost(call.model_id)
            await self._ensure_local(call.model_id, record, unreachable)
            response = await self.forwarder.call(
                call.method, call.payload, metadata, call.timeout_s
            )
        if self.local.recording:  # a copy loaded just now: answer once it is recorded
            await self.local.recorded(call.model_id)
        return response

    async def _ensure_local(
        self, model_id: str, record: ModelRecord, unreachable: Collection[str]
    ) -> None:
        if self.local.is_loaded(model_id):
            return
        started = time.monotonic()
        await self.local.ensure_loaded(
            model_id, record, unreachable=unreachable, until_recorded=False
        )
        self.metrics.cache_miss_ms.observe((time.monotonic() - started) * 1000)

    async def ensure_copy(
        self,
        model_id: str,
        record: ModelRecord,
        *,
        extra: bool = False,
        exclude: Collection[str] = (),
    ) -> str:
        """Make sure the mesh has a copy of the model (with `extra`: one more than now);
        returns the instance that holds or loaded it."""
        excluded = set(exclude)
        last_error: RouterError | None = None
        for _ in range(peers.MAX_ITERATIONS):
            live = self.live_peers()
            holders = {iid for iid in record.instance_ids if iid in live}
            if holders and not extra:
                if self.local.is_loading(model_id):
                    await self.local.ensure_loaded(model_id, record)
                return min(holders)
            choice = place(model_id, record, self._view(model_id), excluded | holders)
            if isinstance(choice, Refuse):
                raise _refusal(choice)
            target = choice.instance_id
            placement = None
            if target != self.local.instance_id:
                placement = self._note_placement(target)
            try:
                await self._load_on(target, model_id, record, live, extra=extra)
                return target
            except (ModelNotHere, RuntimeUnavailable, LoadFailed, NoCapacity) as exc:
                excluded.add(target)
                last_error = exc
            finally:
                if placement is not None:
                    self._answered(placement)
            record = self.registry.models.get(model_id) or record
        raise LoadFailed(f"could not place a copy of {model_id}: {last_error}")

    async def _load_on(
        self,
        target: str,
        model_id: str,
        record: ModelRecord,
        live: Mapping[str, InstanceRecord],
        *,
        extra: bool,
    ) -> None:
        if target == self.local.instance_id:
            await self.local.ensure_loaded(model_id, record, extra=extra)
            return
        endpoint = live[target].endpoint
        metadata = peers.hop_metadata(hops=0, dest=target, load=True, exclude=(), extra=extra)
        request = mm.EnsureLoadedRequest(modelId=model_id, sync=True).SerializeToString()
        load = self.pool.get(endpoint).call(ENSURE_LOADED, request, metadata, None)
        await self.departures.watched(target, live[target].start_time_ms, load)

    def live_peers(self) -> dict[str, InstanceRecord]:
        """Instances with a live record (their lease holds), this one from its own state."""
        return self.cluster.live(self.self_record())


def _with_attempts(exc: NoCapacity, model_id: str, tried: Mapping[str, RouterError]) -> NoCapacity:
    """Nowhere left to place a copy: the real causes are why the instances tried refused."""
    if not tried:
        return exc
    causes = "; ".join(f"{iid}: {error}" for iid, error in tried.items())
    return NoCapacity(f"cannot load model {model_id} on any instance: {causes}")


class _Call(NamedTuple):  # a tuple: built on every request, cheaper than a dataclass
    method: str
    model_id: str
    payload: bytes
    headers: Mapping[str, str | bytes]
    expires_at: float | None
    """time.monotonic() when the request's deadline passes; None: no deadline."""
    names_model: bool
    """The payload names `model_id` where the receiver reads it (a peer needs no header)."""

    @property
    def timeout_s(self) -> float | None:
        """What is left of the deadline: the limit a call to a peer or the runtime gets."""
        if self.expires_at is None:
            return None
        return max(MIN_CALL_TIMEOUT_S, self.expires_at - time.monotonic())


class _Attempt(RouterError):
    """An attempt on one instance failed in a way another instance might not."""

    def __init__(self, instance_id: str, error: RouterError) -> None:
        super().__init__(str(error))
        self.instance_id = instance_id
        self.error = error


_CLIENT_HOPS = Hops()
"""The hops of a client's own request on its first try (no exclusions, not balanced)."""

_DROPPED_HEADERS = frozenset(
    {
        MODEL_ID_HEADER,
        f"{MODEL_ID_HEADER}-bin",
        VMODEL_ID_HEADER,
        f"{VMODEL_ID_HEADER}-bin",
        LEGACY_MODEL_ID_HEADER,
        peers.HOP_HEADER,  # a peer's; the runtime has no use for them
        peers.EXCLUDE_HEADER,
        peers.BALANCED_HEADER,
        "user-agent",
        "content-type",
        "te",
        "grpc-accept-encoding",
        "grpc-timeout",
        "accept-encoding",
    }
)


def _forwarded_metadata(
    headers: Mapping[str, str | bytes], model_id: str | None
) -> list[tuple[str, str | bytes]]:
    """The client's headers that travel on, plus the model id header unless None (a peer
    gets it from the payload or the hop headers)."""
    metadata: list[tuple[str, str | bytes]] = [
        (k, v) for k, v in headers.items() if k not in _DROPPED_HEADERS and not k.startswith(":")
    ]
    if model_id is None:
        return metadata
    if model_id.isascii():
        metadata.append((MODEL_ID_HEADER, model_id))
    else:
        metadata.append((f"{MODEL_ID_HEADER}-bin", model_id.encode()))
    return metadata


def _hops(headers: Mapping[str, str | bytes], hop: peers.Hop) -> Hops:
    """The request's routing headers; `hop`, its hop header, already read."""
    return Hops(
        forwarded=hop.hops > 0,
        dest=hop.dest,
        load=hop.wants_load,
        balanced=peers.is_balanced(headers),
        exclude=frozenset(peers.excluded(headers)),
    )


_REFUSALS: Mapping[RefuseKind, type[RouterError]] = {
    RefuseKind.NOT_HERE: ModelNotHere,
    RefuseKind.NOT_HELD: CopyNotHeld,
    RefuseKind.NO_CAPACITY: NoCapacity,
    RefuseKind.LOAD_FAILED: LoadFailed,
}


def _refusal(decision: Refuse) -> RouterError:
    return _REFUSALS[decision.kind](decision.reason)
