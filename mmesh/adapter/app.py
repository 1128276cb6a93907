"""Composition root of the adapter: settings -> backend + puller + loader -> gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from mmesh.adapter.backends.backend import Backend
from mmesh.adapter.backends.mlserver import MLServerBackend
from mmesh.adapter.backends.repository import RepositoryClient
from mmesh.adapter.backends.triton import TritonBackend
from mmesh.adapter.loading import ModelLoader, SizingPolicy
from mmesh.adapter.puller import Puller
from mmesh.adapter.servicer import RuntimeLimits, RuntimeServicer
from mmesh.adapter.settings import AdapterSettings, ServerType
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc

logger = logging.getLogger(__name__)

GRACE_S = 5.0


def build_backend(settings: AdapterSettings) -> Backend:
    client = RepositoryClient(f"{settings.runtime_host}:{settings.runtime_port}")
    timeout_s = settings.load_timeout_ms / 1000
    if settings.server_type is ServerType.TRITON:
        return TritonBackend(
            client, root_model_dir=settings.root_model_dir, load_timeout_s=timeout_s
        )
    return MLServerBackend(client, root_model_dir=settings.root_model_dir, load_timeout_s=timeout_s)


def build_servicer(settings: AdapterSettings, backend: Backend) -> RuntimeServicer:
    puller = Puller(
        root_model_dir=settings.root_model_dir,
        storage_config_dir=settings.storage_config_dir,
        pvc_mounts_dir=settings.pvc_mounts_dir,
    )
    loader = ModelLoader(
        puller=puller,
        backend=backend,
        sizing=SizingPolicy(settings.model_size_multiplier, settings.default_model_size_bytes),
        load_timeout_s=settings.load_timeout_ms / 1000,
    )
    limits = RuntimeLimits(
        capacity_bytes=settings.capacity_bytes,
        loading_concurrency=settings.loading_concurrency,
        load_timeout_ms=settings.load_timeout_ms,
        default_model_size_bytes=settings.default_model_size_bytes,
        runtime_version=settings.runtime_version,
        limit_model_concurrency=settings.limit_per_model_concurrency > 0,
    )
    return RuntimeServicer(loader, backend, limits)


async def serve(settings: AdapterSettings) -> None:
    backend = build_backend(settings)
    server = grpc.aio.server()
    rt_grpc.add_ModelRuntimeServicer_to_server(build_servicer(settings, backend), server)
    address = f"{settings.host}:{settings.port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info(
        "adapter (%s) serving mmesh.ModelRuntime on %s, model server at %s:%d",
        settings.server_type,
        address,
        settings.runtime_host,
        settings.runtime_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("adapter stopping")
    await server.stop(GRACE_S)
    await backend.close()
