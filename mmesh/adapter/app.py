"""Composition root of the adapter: settings -> backend + puller + loader -> gRPC server.

With ADAPTER_SERVER_TYPE=puller there is no backend: the storage helper forwards to the
custom runtime's own ModelRuntime API (`helper.py`)."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from mmesh.adapter.backends.backend import Backend
from mmesh.adapter.backends.mlserver import MLServerBackend
from mmesh.adapter.backends.ovms import OvmsBackend
from mmesh.adapter.backends.repository import RepositoryClient
from mmesh.adapter.backends.torchserve import TorchServeBackend
from mmesh.adapter.backends.triton import TritonBackend
from mmesh.adapter.loading import ModelLoader, SizingPolicy
from mmesh.adapter.puller import Puller
from mmesh.adapter.runtime_client import RuntimeClient, grpc_target
from mmesh.adapter.serverapi import METHOD_INFOS, TorchServePorts
from mmesh.adapter.servicer import RuntimeLimits, RuntimeServicer
from mmesh.adapter.servicer_helper import StorageHelperServicer
from mmesh.adapter.settings import AdapterSettings, ServerType
from mmesh.core.numbers import whole_number
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc

logger = logging.getLogger(__name__)

GRACE_S = 5.0


TORCHSERVE_GRPC_INFERENCE_PORT = 7070


def build_backend(settings: AdapterSettings) -> Backend:
    timeout_s = settings.load_timeout_ms / 1000
    root = settings.root_model_dir
    if settings.server_type is ServerType.OVMS:
        return OvmsBackend(
            f"http://{settings.runtime_host}:{settings.runtime_port}",
            root_model_dir=root,
            config_file=settings.ovms_config_file,
            batch_wait_s=settings.batch_wait_ms / 1000,
            reload_timeout_s=settings.ovms_reload_timeout_ms / 1000,
        )
    if settings.server_type is ServerType.TORCHSERVE:
        torchserve = TorchServeBackend(
            f"http://{settings.runtime_host}:{settings.runtime_port}",
            root_model_dir=root,
            load_timeout_s=timeout_s,
            workers=settings.limit_per_model_concurrency,
            batch_size=settings.request_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            metric_interval_s=settings.torchserve_metric_interval_s,
        )
        data_port = _endpoint_port(settings.runtime_data_endpoint)
        torchserve.write_config(
            TorchServePorts(settings.runtime_port, data_port or TORCHSERVE_GRPC_INFERENCE_PORT)
        )
        return torchserve
    client = RepositoryClient(f"{settings.runtime_host}:{settings.runtime_port}")
    if settings.server_type is ServerType.TRITON:
        return TritonBackend(client, root_model_dir=root, load_timeout_s=timeout_s)
    return MLServerBackend(client, root_model_dir=root, load_timeout_s=timeout_s)


def _endpoint_port(endpoint: str) -> int | None:
    kind, _, value = endpoint.partition(":")
    return whole_number(value) if kind == "port" else None


def build_puller(settings: AdapterSettings) -> Puller:
    return Puller(
        root_model_dir=settings.root_model_dir,
        storage_config_dir=settings.storage_config_dir,
        pvc_mounts_dir=settings.pvc_mounts_dir,
    )


def build_servicer(settings: AdapterSettings, backend: Backend) -> RuntimeServicer:
    puller = build_puller(settings)
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
        method_infos=METHOD_INFOS[settings.server_type.value],
    )
    return RuntimeServicer(loader, backend, limits)


async def serve(settings: AdapterSettings) -> None:
    server = grpc.aio.server()
    closer: Backend | RuntimeClient
    if settings.server_type is ServerType.PULLER:
        target = grpc_target(settings.model_server_endpoint, settings.runtime_host)
        closer = RuntimeClient(target)
        helper = StorageHelperServicer(build_puller(settings), closer)
        rt_grpc.add_ModelRuntimeServicer_to_server(helper, server)
        behind = f"custom runtime's ModelRuntime at {target}"
    else:
        closer = build_backend(settings)
        rt_grpc.add_ModelRuntimeServicer_to_server(build_servicer(settings, closer), server)
        behind = f"model server at {settings.runtime_host}:{settings.runtime_port}"
    address = f"{settings.host}:{settings.port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info(
        "adapter (%s) serving mmesh.ModelRuntime on %s, %s",
        settings.server_type,
        address,
        behind,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("adapter stopping")
    await server.stop(GRACE_S)
    await closer.close()
