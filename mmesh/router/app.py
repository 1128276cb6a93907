"""Composition root of the router: settings -> TLS files, etcd, registry mirror, runtime,
cache, servers (gRPC 8033 + pod-to-pod 8080, REST 8008, metrics 2112, probes 8089),
membership; ordered shutdown. With TLS on, 8033, 8080 and 8008 (and /metrics when its
scheme is https) accept TLS only; probes and /prestop stay plain HTTP for the kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mmesh.core.clock import now_ms
from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV, StoreAuthFailed
from mmesh.core.ids import InstanceId
from mmesh.core.records import InstanceRecord, KeyLayout, Table, bytes_to_units
from mmesh.core.version import VERSION
from mmesh.router.cache import EntryState, EvictionPolicy, LocalCache
from mmesh.router.certs import CertFiles, PeerCredentials, ServerContext, server_credentials
from mmesh.router.cluster import ClusterView
from mmesh.router.copies import CopyPolicy, is_min_copy
from mmesh.router.dataplane import DataPlane, RuntimeCallObserver
from mmesh.router.departed import RecentDepartures
from mmesh.router.errors import RouterError
from mmesh.router.eviction import PolicyKind, Scoring
from mmesh.router.forwarding import Forwarder
from mmesh.router.healer import FirstLoads, Healer
from mmesh.router.inference import InferenceRouter
from mmesh.router.inflight import InflightLimiter
from mmesh.router.janitor import Janitor, JanitorPolicy, Leadership
from mmesh.router.loading import LocalModels
from mmesh.router.management import Management
from mmesh.router.membership import Membership
from mmesh.router.metrics import RouterMetrics
from mmesh.router.nodezone import api_base, lookup_zone
from mmesh.router.payloads import parse_processors
from mmesh.router.payloadsink import PayloadSinks
from mmesh.router.peers import Departures, PeerPool
from mmesh.router.registry import Registry
from mmesh.router.rest import build_rest_app
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo, check_runtime_info
from mmesh.router.servicers import add_servicers
from mmesh.router.settings import RouterSettings
from mmesh.router.tls import BadCertificate, ClientAuth
from mmesh.router.usage import Usage
from mmesh.router.warming import Warmer

logger = logging.getLogger(__name__)

STARTUP_STORE_WAIT_S = 60.0
"""How long a starting router waits for etcd before it exits (liveness waits 90 s)."""
STARTUP_STORE_RETRY_S = 0.5
MAX_STARTUP_STORE_RETRY_S = 5.0


@dataclass
class Lifecycle:
    ready: bool = False
    shutting_down: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    migrated: asyncio.Event = field(default_factory=asyncio.Event)
    has_been_ready: bool = False
    """Whether readiness has once been reported true; from then on a peer's drain no longer
    holds it back (only a new pod waits, or a deleted pod's drain would leave none ready)."""

    def is_ready(self) -> bool:
        return self.ready and not self.shutting_down

    def readiness(self, *, other_draining: bool) -> bool:
        """The /ready answer: a pod that has not been ready yet stays not ready while another
        instance drains, which staggers a rolling update one pod at a time."""
        if not self.is_ready() or (other_draining and not self.has_been_ready):
            return False
        self.has_been_ready = True
        return True


def eviction_policy(settings: RouterSettings, info: RuntimeInfo) -> EvictionPolicy:
    loaded_age = settings.min_loaded_age_ms
    if settings.min_churn_age_ms is not None:
        churn = settings.min_churn_age_ms
    elif settings.eviction_policy == PolicyKind.VALUE:
        churn = 0
    else:
        churn = 10 * max(3000, info.load_timeout_ms // 3)
    return EvictionPolicy(min_churn_age_ms=churn, min_loaded_age_ms=loaded_age)


def eviction_scoring(settings: RouterSettings) -> Scoring | None:
    """The value policy's parameters; None selects LRU."""
    if settings.eviction_policy == PolicyKind.LRU:
        return None
    return Scoring(tau_ms=settings.eviction_tau_ms)


def copy_policy(settings: RouterSettings) -> CopyPolicy:
    return CopyPolicy(
        scaleup_rpm=settings.scaleup_rpm_threshold,
        idle_max_ms=int(settings.copy_idle_max_s * 1000),
        steady_gap_ms=int(settings.second_copy_gap_s * 1000),
        settle_ms=int(settings.copy_settle_s * 1000),
        unload_gap_ms=int(settings.copy_unload_gap_s * 1000),
        max_free_fraction=settings.scaledown_max_free_pct / 100,
    )


class OwnRecord:
    """This router's instance record as it stands now: what `Membership` publishes, and
    what routing reads for this instance on every request it does not serve from a local
    copy (so the settings-derived fields are worked out once, not per call)."""

    def __init__(
        self,
        local: LocalModels,
        settings: RouterSettings,
        started_ms: int,
        life: Lifecycle,
        usage: Usage,
    ) -> None:
        self.local, self.life, self.usage = local, life, usage
        self.started_ms = started_ms
        self.location, self.zone = settings.location, settings.zone
        self.labels = settings.label_list
        self.endpoint = settings.endpoint

    def __call__(self) -> InstanceRecord:
        local = self.local
        cache = local.cache
        return InstanceRecord(
            lru_time_ms=cache.victim_time_ms(),
            model_count=cache.count,
            capacity_units=cache.capacity_units,
            used_units=cache.used_units,
            loading_threads=local.info.loading_concurrency,
            loads_in_progress=local.loading_count(),
            shutting_down=self.life.shutting_down,
            start_time_ms=self.started_ms,
            version=VERSION,
            location=self.location,
            zone=self.zone,
            labels=self.labels,
            endpoint=self.endpoint,
            rpm=self.usage.rpm,
            cold=local.cold,
        )


def http_app(is_ready: Callable[[], bool], metrics: RouterMetrics | None) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        ok = is_ready()
        return web.Response(status=200 if ok else 503, text="ready" if ok else "not ready")

    async def live(_: web.Request) -> web.Response:
        return web.Response(text="live")

    async def scrape(_: web.Request) -> web.Response:
        assert metrics is not None
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    if metrics is not None:
        app.router.add_get("/metrics", scrape)
    return app


def prestop_app(life: Lifecycle) -> web.Application:
    async def prestop(_: web.Request) -> web.Response:
        life.stop.set()
        await life.migrated.wait()
        return web.Response(text="models moved; shutting down")

    app = web.Application()
    app.router.add_get("/prestop", prestop)
    return app


async def start_site(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner


def load_tls(settings: RouterSettings) -> CertFiles | None:
    """The TLS files, read and checked now (BadCertificate); None when TLS is off."""
    policy = settings.tls_policy()
    return CertFiles(policy) if policy is not None else None


@dataclass
class Pod:
    """Everything one router runs, built by `build_pod` and torn down by `shutdown`."""

    settings: RouterSettings
    life: Lifecycle
    kv: EtcdKV
    registry: Registry
    runtime: RuntimeClient
    local: LocalModels
    router: InferenceRouter
    janitor: Janitor
    metrics: RouterMetrics
    forwarder: Forwarder
    pool: PeerPool
    healer: Healer
    warmer: Warmer
    first_loads: FirstLoads
    management: Management
    cluster: ClusterView
    membership: Membership
    """Built with the pod, started once the servers are up (`serve`)."""
    tls: CertFiles | None
    server: grpc.aio.Server | None = None
    runners: list[web.AppRunner] = field(default_factory=list)
    dataplane: DataPlane | None = None
    sinks: PayloadSinks | None = None

    def is_ready(self) -> bool:
        return self.life.readiness(other_draining=self.cluster.other_draining())


async def with_node_zone(settings: RouterSettings) -> RouterSettings:
    """MM_ZONE, or the zone label of the pod's node read from the Kubernetes API."""
    if settings.zone or not settings.node_name:
        return settings
    base = api_base(
        explicit_url=settings.kube_api_url,
        service_host=settings.kube_service_host,
        service_port=settings.kube_service_port,
    )
    zone = await lookup_zone(settings.node_name, base)
    if not zone:
        return settings
    logger.info("zone %s (label of node %s)", zone, settings.node_name)
    return settings.model_copy(update={"zone": zone})


async def open_registry(settings: RouterSettings) -> tuple[EtcdKV, Registry]:
    """Connect and mirror the registry. While etcd does not answer (it restarts), try again
    for up to STARTUP_STORE_WAIT_S, well within the liveness probe's initial delay: a
    router that exited would wait out the kubelet's growing restart back-off instead."""
    give_up = time.monotonic() + STARTUP_STORE_WAIT_S
    pause = STARTUP_STORE_RETRY_S
    while True:
        try:
            kv, registry = await _mirror_registry(settings)
            break
        except StoreAuthFailed:
            raise  # waiting will not mend a wrong password
        except StoreUnavailable as exc:
            if time.monotonic() + pause > give_up:
                raise StoreUnavailable(
                    f"etcd did not answer for {STARTUP_STORE_WAIT_S:.0f} s at start: {exc}"
                ) from exc
            logger.warning("etcd does not answer at start (%s); trying again in %.1f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_STARTUP_STORE_RETRY_S)
    # The mirror of a large registry is hundreds of thousands of long-lived objects; left in
    # the collector's generations, every full collection traverses them all and stalls
    # requests for 100+ ms. They are acyclic data that live as long as the process.
    gc.collect()
    gc.freeze()
    return kv, registry


async def _mirror_registry(settings: RouterSettings) -> tuple[EtcdKV, Registry]:
    conn = settings.etcd_connection()
    kv = await EtcdKV.connect(conn)
    registry = Registry(kv, KeyLayout(conn.root_prefix, settings.service_name))
    try:
        await registry.start()
    except BaseException:
        await kv.close()
        raise
    return kv, registry


async def open_runtime(settings: RouterSettings) -> tuple[RuntimeClient, RuntimeInfo]:
    runtime = RuntimeClient(settings.runtime_target)
    info = await runtime.wait_ready(settings.startup_timeout_s)
    check_runtime_info(info)
    logger.info("runtime ready: %s", info)
    return runtime, info


def janitor_policy(settings: RouterSettings) -> JanitorPolicy:
    return JanitorPolicy(
        rate_interval_s=settings.rate_check_interval_ms / 1000,
        scaleup_rpm=settings.scaleup_rpm_threshold,
        reap_grace_s=settings.reap_grace_s,
        second_copy_age_s=settings.second_copy_age_s,
        second_copy_gap_s=settings.second_copy_gap_s,
        failure_expiry_ms=settings.load_failure_expiry_ms,
        copy_policy=copy_policy(settings),
        scaledown_interval_s=settings.scaledown_interval_s,
        retire_drain_s=settings.copy_drain_s,
    )


def payload_sinks(settings: RouterSettings, metrics: RouterMetrics) -> PayloadSinks:
    processors, problems = parse_processors(settings.payload_processors)
    for problem in problems:
        logger.error("MM_PAYLOAD_PROCESSORS: %s; skipped", problem)
    return PayloadSinks(
        processors,
        capacity=settings.payload_processors_capacity,
        workers=settings.payload_processors_threads,
        dropped=metrics.payloads_dropped,
        failed=metrics.payloads_failed,
    )


def local_models(
    settings: RouterSettings,
    *,
    registry: Registry,
    runtime: RuntimeClient,
    info: RuntimeInfo,
    metrics: RouterMetrics,
    cluster: ClusterView,
    on_change: Callable[[], None],
) -> LocalModels:
    """The local cache and loader; a min copy is protected from eviction."""
    me = settings.resolved_instance_id
    cache = LocalCache(
        bytes_to_units(info.capacity_bytes),
        scoring=eviction_scoring(settings),
        protected=lambda m: is_min_copy(registry.models.get(m), me, cluster.is_live),
    )
    return LocalModels(
        instance_id=me,
        cache=cache,
        runtime=runtime,
        info=info,
        registry=registry,
        metrics=metrics,
        policy=eviction_policy(settings, info),
        failure_expiry_ms=settings.load_failure_expiry_ms,
        is_live=cluster.is_live,
        on_change=on_change,
    )


def outbound(
    settings: RouterSettings, tls: CertFiles | None, metrics: RouterMetrics
) -> tuple[Forwarder, PeerPool]:
    """The two ways out of the router: to its own runtime and to peer routers."""
    forwarder = Forwarder(
        settings.serving_target,
        max_message_bytes=settings.max_message_bytes,
        observer=RuntimeCallObserver(metrics),
    )
    pool = PeerPool(
        max_message_bytes=settings.max_message_bytes,
        tls=PeerCredentials(tls) if tls is not None else None,
    )
    return forwarder, pool


def cluster_duties(
    settings: RouterSettings,
    *,
    registry: Registry,
    local: LocalModels,
    router: InferenceRouter,
    cluster: ClusterView,
    usage: Usage,
    metrics: RouterMetrics,
    membership: Membership,
) -> tuple[FirstLoads, Management, Janitor]:
    """The parts that act for the whole cluster while this router leads (first loads of
    new models, vmodel transitions, the janitor's sweeps), sharing one `Leadership`."""
    leadership = Leadership()
    first_loads = FirstLoads(
        registry=registry,
        place=router.ensure_copy,
        is_leader=leadership,
        live=cluster.live_ids,
        failure_expiry_ms=settings.load_failure_expiry_ms,
    )
    registry.on_change(first_loads.on_change)
    management = Management(
        registry=registry,
        local=local,
        failure_expiry_ms=settings.load_failure_expiry_ms,
        default_owner=settings.default_vmodel_owner,
        drives_transitions=leadership,
        place=router.ensure_copy,
    )
    janitor = Janitor(
        registry=registry,
        router=router,
        usage=usage,
        metrics=metrics,
        instance_id=local.instance_id,
        policy=janitor_policy(settings),
        lease=lambda: membership.lease,
        leadership=leadership,
        duties=(first_loads.sweep, management.redrive_transitions),
    )
    return first_loads, management, janitor


async def build_pod(settings: RouterSettings, life: Lifecycle) -> Pod:
    """Every part of the router, each built after what it needs and given it."""
    settings = await with_node_zone(settings)
    tls = load_tls(settings)
    kv, registry = await open_registry(settings)
    runtime, info = await open_runtime(settings)
    metrics = RouterMetrics(settings.metrics_config)
    cluster = ClusterView(registry, settings.resolved_instance_id)
    # The cache's changes reach the gauges (LocalModels) and the published record: the
    # membership task waits on this event, set by the cache that its record reads.
    record_changed = asyncio.Event()
    local = local_models(
        settings,
        registry=registry,
        runtime=runtime,
        info=info,
        metrics=metrics,
        cluster=cluster,
        on_change=record_changed.set,
    )
    usage = Usage()
    own_record = OwnRecord(local, settings, now_ms(), life, usage)
    membership = Membership(
        kv,
        registry.layout.instance_key(InstanceId(local.instance_id)),
        own_record,
        ttl_s=settings.instance_lease_ttl_s,
        changed=record_changed,
    )
    forwarder, pool = outbound(settings, tls, metrics)
    warmer = Warmer(local=local, registry=registry, labels=settings.label_list)
    local.on_unreachable = warmer.runtime_unreachable
    healer = Healer(
        registry=registry,
        local=local,
        forwarder=forwarder,
        metrics=metrics,
        failure_expiry_ms=settings.load_failure_expiry_ms,
        interval_s=settings.reconcile_interval_s,
        probe_interval_s=settings.runtime_check_interval_s,
        on_runtime_lost=warmer.begin,
    )
    departures = Departures(functools.partial(_start_time_ms, registry))
    registry.on_change(departures.peer_changed)
    departed = RecentDepartures(registry.instances.get, cluster.registered())
    registry.on_change(departed.changed)
    router = InferenceRouter(
        registry=registry,
        cluster=cluster,
        local=local,
        forwarder=forwarder,
        metrics=metrics,
        healer=healer,
        usage=usage,
        pool=pool,
        self_record=own_record,
        inflight=InflightLimiter(settings.max_inflight_per_model),
        departures=departures,
        departed=departed,
    )
    first_loads, management, janitor = cluster_duties(
        settings,
        registry=registry,
        local=local,
        router=router,
        cluster=cluster,
        usage=usage,
        metrics=metrics,
        membership=membership,
    )
    # Listeners run in the order subscribed: first loads, then dropping the local copy of
    # an unregistered model.
    registry.on_change(functools.partial(_drop_unregistered, registry, local))
    sinks = payload_sinks(settings, metrics)
    return Pod(
        settings=settings,
        life=life,
        kv=kv,
        registry=registry,
        runtime=runtime,
        local=local,
        router=router,
        janitor=janitor,
        metrics=metrics,
        forwarder=forwarder,
        pool=pool,
        healer=healer,
        warmer=warmer,
        first_loads=first_loads,
        management=management,
        cluster=cluster,
        membership=membership,
        tls=tls,
        sinks=sinks,
        dataplane=DataPlane(
            router, metrics, default_timeout_ms=settings.inference_timeout_ms, sinks=sinks
        ),
    )


async def start_servers(pod: Pod) -> None:
    settings = pod.settings
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
    )
    assert pod.dataplane is not None
    if pod.sinks is not None and pod.sinks.processors:
        pod.sinks.start()
    add_servicers(
        server,
        management=pod.management,
        dataplane=pod.dataplane,
        ready=pod.is_ready,
        log_each=settings.log_each_invoke,
    )
    add_grpc_ports(server, settings, pod.tls)
    await server.start()
    pod.server = server
    probes = http_app(pod.is_ready, None)
    pod.runners.append(await start_site(probes, settings.host, settings.probe_port))
    if settings.prestop_port:
        prestop = prestop_app(pod.life)
        pod.runners.append(await start_site(prestop, settings.host, settings.prestop_port))
    if settings.metrics_port:
        scrape = http_app(pod.is_ready, pod.metrics)
        secure = pod.tls if settings.metrics_https else None
        context = site_context(secure, client_certs=False)
        pod.runners.append(await start_site(scrape, settings.host, settings.metrics_port, context))
    if settings.rest_port:
        rest = build_rest_app(
            pod.dataplane,
            readiness=pod.is_ready,
            max_body_bytes=settings.max_message_bytes,
            model_readiness=pod.dataplane.model_readiness,
        )
        context = site_context(pod.tls)
        pod.runners.append(await start_site(rest, settings.host, settings.rest_port, context))


def add_grpc_ports(
    server: grpc.aio.Server, settings: RouterSettings, tls: CertFiles | None
) -> None:
    """8033 for clients and 8080 for peers; with TLS, the peer port always demands a
    certificate (mutual TLS between pods), the client port as MM_TLS_CLIENT_AUTH says."""
    external = f"{settings.host}:{settings.grpc_port}"
    internal = f"{settings.host}:{settings.internal_port}"
    if tls is None:
        server.add_insecure_port(external)
        server.add_insecure_port(internal)
        return
    client_auth = tls.policy.client_auth
    server.add_secure_port(external, server_credentials(tls, client_auth=client_auth))
    server.add_secure_port(internal, server_credentials(tls, client_auth=ClientAuth.REQUIRE))


def site_context(tls: CertFiles | None, *, client_certs: bool = True) -> ssl.SSLContext | None:
    """The SSL context of an aiohttp site; None (plain HTTP) when TLS is off.
    `client_certs`: ask for them as MM_TLS_CLIENT_AUTH says (else never, as for /metrics)."""
    if tls is None:
        return None
    client_auth = tls.policy.client_auth if client_certs else ClientAuth.NONE
    return ServerContext(tls, client_auth=client_auth).context


async def serve(settings: RouterSettings) -> None:
    life = Lifecycle()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stop.set)
    try:
        pod = await build_pod(settings, life)
    except (BadCertificate, StoreAuthFailed, StoreUnavailable) as exc:
        raise SystemExit(f"mmesh router: {exc}") from exc
    lost: list[str] = []
    try:
        lost = await pod.healer.startup()
    except StoreUnavailable as exc:
        logger.warning("start-up reconcile skipped (%s); the periodic one will repair", exc)
    await start_servers(pod)
    pod.warmer.begin_at_start(lost)  # before the first record goes out: it says cold
    await pod.membership.start()
    pod.janitor.start()
    pod.healer.start()
    pod.local.changed()
    life.ready = True
    logger.info(
        "router %s serving gRPC on %s:%d%s (event loop: %s)",
        pod.local.instance_id,
        settings.host,
        settings.grpc_port,
        " (TLS)" if pod.tls is not None else "",
        type(loop).__module__.split(".")[0],
    )
    await life.stop.wait()
    await shutdown(pod)


def _start_time_ms(registry: Registry, instance_id: str) -> int | None:
    record = registry.instances.get(instance_id)
    return None if record is None else record.start_time_ms


def _drop_unregistered(registry: Registry, local: LocalModels, table: Table, ident: str) -> None:
    if table is Table.REGISTRY and registry.models.get(ident) is None:
        local.forget(ident)


async def migrate_recent_models(pod: Pod, deadline_s: float) -> None:
    """Give every recently used local model a copy on another instance first."""
    cutoff_ms = now_ms() - int(pod.settings.migrate_cutoff_s * 1000)
    recent = sorted(
        (
            e
            for e in pod.local.cache.entries()
            if e.state is EntryState.LOADED and e.last_used_ms >= cutoff_ms
        ),
        key=lambda e: e.last_used_ms,
        reverse=True,
    )
    others = pod.cluster.serving_others()
    if not recent or not others:
        return
    logger.info("moving %d recently used models to other instances", len(recent))
    for entry in recent:
        record = pod.registry.models.get(entry.model_id)
        remaining = deadline_s - time.monotonic()
        if record is None or remaining <= 0:
            continue
        try:
            await asyncio.wait_for(
                pod.router.ensure_copy(entry.model_id, record, extra=True), timeout=remaining
            )
        except (RouterError, TimeoutError) as exc:
            logger.warning("could not move %s before shutdown: %s", entry.model_id, exc)


async def shutdown(pod: Pod) -> None:
    """Announce it, move recent models elsewhere, stop taking requests, let in-flight ones
    finish, unload, deregister."""
    logger.info("router shutting down")
    pod.life.shutting_down = True
    grace_s = pod.settings.shutdown_timeout_ms / 1000
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(StoreUnavailable):
        await pod.membership.publish_now()
    await pod.janitor.stop()
    await pod.healer.stop()
    await pod.warmer.stop()
    await pod.first_loads.stop()
    await migrate_recent_models(pod, deadline - grace_s / 3)
    pod.life.migrated.set()
    if pod.server is not None:
        await pod.server.stop(max(1.0, deadline - time.monotonic()))
    for runner in pod.runners:
        await runner.cleanup()
    with contextlib.suppress(TimeoutError):
        remaining = max(1.0, deadline - time.monotonic())
        await asyncio.wait_for(pod.local.unload_all(), timeout=remaining)
    await pod.membership.stop()
    await pod.registry.stop()
    await pod.forwarder.close()
    if pod.sinks is not None:
        await pod.sinks.close()
    await pod.pool.close()
    await pod.runtime.close()
    await pod.kv.close()
    logger.info("router stopped")
