"""Composition root of the router: settings -> etcd, registry mirror, runtime, cache,
servers (gRPC 8033, REST 8008, metrics 2112, probes 8089), membership; ordered shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mmesh.core.etcd import EtcdKV
from mmesh.core.ids import InstanceId
from mmesh.core.records import InstanceRecord, KeyLayout, Table, bytes_to_units
from mmesh.router.cache import EvictionPolicy, LocalCache
from mmesh.router.forwarding import Forwarder
from mmesh.router.inference import InferenceRouter
from mmesh.router.loading import LocalModels, now_ms
from mmesh.router.management import Management
from mmesh.router.membership import Membership
from mmesh.router.metrics import RouterMetrics
from mmesh.router.peers import PeerPool
from mmesh.router.registry import Registry
from mmesh.router.rest import build_rest_app
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo, check_runtime_info
from mmesh.router.servicers import add_servicers
from mmesh.router.settings import RouterSettings

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass
class Lifecycle:
    ready: bool = False
    shutting_down: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def is_ready(self) -> bool:
        return self.ready and not self.shutting_down


def eviction_policy(settings: RouterSettings, info: RuntimeInfo) -> EvictionPolicy:
    if settings.min_churn_age_ms is not None:
        return EvictionPolicy(min_churn_age_ms=settings.min_churn_age_ms)
    assume_loaded_ms = max(3000, info.load_timeout_ms // 3)
    return EvictionPolicy(min_churn_age_ms=10 * assume_loaded_ms)


def instance_snapshot(
    local: LocalModels, settings: RouterSettings, started_ms: int, life: Lifecycle
) -> InstanceRecord:
    cache = local.cache
    return InstanceRecord(
        lru_time_ms=cache.lru_time_ms(),
        model_count=cache.count,
        capacity_units=cache.capacity_units,
        used_units=cache.used_units,
        loading_threads=local.info.loading_concurrency,
        loads_in_progress=local.loading_count(),
        shutting_down=life.shutting_down,
        start_time_ms=started_ms,
        version=VERSION,
        location=settings.location,
        zone=settings.zone,
        labels=settings.label_list,
        endpoint=settings.endpoint,
    )


def update_gauges(metrics: RouterMetrics, local: LocalModels) -> None:
    cache = local.cache
    capacity = local.capacity_bytes()
    used = cache.used_units * 8192
    metrics.capacity_bytes.set(capacity)
    metrics.used_bytes.set(used)
    metrics.used_bps.set(used * 10000 // capacity if capacity else 0)
    metrics.models_total.set(cache.count)
    lru = cache.lru_time_ms()
    if lru is not None:
        metrics.instance_lru_s.set(lru / 1000)
        metrics.instance_lru_age_s.set(max(0, now_ms() - lru) / 1000)


def http_app(life: Lifecycle, metrics: RouterMetrics | None) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        return web.Response(
            status=200 if life.is_ready() else 503, text="ready" if life.is_ready() else "not ready"
        )

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


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(settings: RouterSettings) -> None:
    life = Lifecycle()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stop.set)
    instance_id = settings.resolved_instance_id
    conn = settings.etcd_connection()
    kv = await EtcdKV.connect(conn)
    layout = KeyLayout(conn.root_prefix, settings.service_name)
    registry = Registry(kv, layout)
    await registry.start()
    runtime = RuntimeClient(f"{settings.runtime_host}:{settings.runtime_port}")
    info = await runtime.wait_ready(settings.startup_timeout_s)
    check_runtime_info(info)
    logger.info("runtime ready: %s", info)
    metrics = RouterMetrics()
    membership: Membership | None = None

    def changed() -> None:
        update_gauges(metrics, local)
        if membership is not None:
            membership.changed()

    local = LocalModels(
        instance_id=instance_id,
        cache=LocalCache(bytes_to_units(info.capacity_bytes)),
        runtime=runtime,
        info=info,
        registry=registry,
        metrics=metrics,
        policy=eviction_policy(settings, info),
        failure_expiry_ms=settings.load_failure_expiry_ms,
        on_change=changed,
    )
    data_port = settings.serving_port or settings.runtime_port
    forwarder = Forwarder(
        f"{settings.runtime_host}:{data_port}", max_message_bytes=settings.max_message_bytes
    )
    started_ms = now_ms()
    pool = PeerPool(max_message_bytes=settings.max_message_bytes)
    router = InferenceRouter(
        registry=registry,
        local=local,
        forwarder=forwarder,
        metrics=metrics,
        pool=pool,
        self_record=lambda: instance_snapshot(local, settings, started_ms, life),
    )
    management = Management(
        registry=registry,
        local=local,
        failure_expiry_ms=settings.load_failure_expiry_ms,
        default_owner=settings.default_vmodel_owner,
        place=router.ensure_copy,
    )
    registry.on_change(lambda table, ident: _drop_unregistered(registry, local, table, ident))

    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
    )
    add_servicers(
        server,
        management=management,
        router=router,
        metrics=metrics,
        ready=life.is_ready,
        log_each=settings.log_each_invoke,
    )
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    server.add_insecure_port(f"{settings.host}:{settings.internal_port}")
    await server.start()
    runners = [await start_site(http_app(life, None), settings.host, settings.probe_port)]
    if settings.metrics_port:
        runners.append(
            await start_site(http_app(life, metrics), settings.host, settings.metrics_port)
        )
    if settings.rest_port:
        rest = build_rest_app(
            router, readiness=life.is_ready, max_body_bytes=settings.max_message_bytes
        )
        runners.append(await start_site(rest, settings.host, settings.rest_port))
    membership = Membership(
        kv,
        layout.instance_key(InstanceId(instance_id)),
        lambda: instance_snapshot(local, settings, started_ms, life),
        ttl_s=settings.instance_lease_ttl_s,
    )
    await membership.start()
    changed()
    life.ready = True
    logger.info("router %s serving gRPC on %s:%d", instance_id, settings.host, settings.grpc_port)
    await life.stop.wait()
    await shutdown(settings, life, server, local, membership, runners)
    await registry.stop()
    await forwarder.close()
    await pool.close()
    await runtime.close()
    await kv.close()


def _drop_unregistered(registry: Registry, local: LocalModels, table: Table, ident: str) -> None:
    if table is Table.REGISTRY and registry.models.get(ident) is None:
        local.evict(ident)


async def shutdown(
    settings: RouterSettings,
    life: Lifecycle,
    server: grpc.aio.Server,
    local: LocalModels,
    membership: Membership,
    runners: list[web.AppRunner],
) -> None:
    """Stop taking requests, let in-flight ones finish, unload, deregister."""
    logger.info("router shutting down")
    life.shutting_down = True
    membership.changed()
    started = time.monotonic()
    grace_s = settings.shutdown_timeout_ms / 1000
    await server.stop(grace_s)
    for runner in runners:
        await runner.cleanup()
    with contextlib.suppress(TimeoutError):
        remaining = max(1.0, grace_s - (time.monotonic() - started))
        await asyncio.wait_for(local.unload_all(), timeout=remaining)
    await membership.stop()
    logger.info("router stopped")
