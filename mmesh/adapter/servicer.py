"""gRPC face of the adapter: `mmesh.ModelRuntime`. Parse, delegate to ModelLoader, reply."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from mmesh.adapter.backends.backend import Backend
from mmesh.adapter.errors import AdapterError, ModelNotLoaded
from mmesh.adapter.loading import ModelLoader
from mmesh.adapter.serverapi import V2_METHOD_INFOS
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self_ = TypeVar("Self_")


def grpc_errors(
    handler: Callable[[Self_, Req, Context], Awaitable[Resp]],
) -> Callable[[Self_, Req, Context], Awaitable[Resp]]:
    """Our errors become their status code with the message; anything else is INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(self: Self_, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except AdapterError as exc:
            logger.warning("%s failed: %s", handler.__name__, exc)
            await context.abort(grpc.StatusCode[exc.grpc_code], str(exc))
        except Exception as exc:
            logger.exception("%s failed unexpectedly", handler.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"{handler.__name__}: {type(exc).__name__}: {exc}"
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


@dataclass(frozen=True, slots=True)
class RuntimeLimits:
    capacity_bytes: int
    loading_concurrency: int
    load_timeout_ms: int
    default_model_size_bytes: int
    runtime_version: str
    limit_model_concurrency: bool
    method_infos: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: dict(V2_METHOD_INFOS)
    )
    """Data-plane methods the server answers -> where the router writes the model id."""


class RuntimeServicer(rt_grpc.ModelRuntimeServicer):
    def __init__(self, loader: ModelLoader, backend: Backend, limits: RuntimeLimits) -> None:
        self._loader = loader
        self._backend = backend
        self._limits = limits

    @grpc_errors
    async def runtimeStatus(
        self, request: rt.RuntimeStatusRequest, context: Context
    ) -> rt.RuntimeStatusResponse:
        version = await self._backend.ready_version()
        if version is None:
            return rt.RuntimeStatusResponse(status=rt.RuntimeStatusResponse.STARTING)
        await self._loader.purge()
        return self._ready_status(version)

    @grpc_errors
    async def loadModel(
        self, request: rt.LoadModelRequest, context: Context
    ) -> rt.LoadModelResponse:
        size = await self._loader.load(
            request.modelId, request.modelType, request.modelPath, request.modelKey
        )
        return rt.LoadModelResponse(sizeInBytes=size)

    @grpc_errors
    async def unloadModel(
        self, request: rt.UnloadModelRequest, context: Context
    ) -> rt.UnloadModelResponse:
        await self._loader.unload(request.modelId)
        return rt.UnloadModelResponse()

    @grpc_errors
    async def predictModelSize(
        self, request: rt.PredictModelSizeRequest, context: Context
    ) -> rt.PredictModelSizeResponse:
        return rt.PredictModelSizeResponse(
            sizeInBytes=self._loader.predicted_size(request.modelKey)
        )

    @grpc_errors
    async def modelSize(
        self, request: rt.ModelSizeRequest, context: Context
    ) -> rt.ModelSizeResponse:
        size = self._loader.loaded_size(request.modelId)
        if size is None:
            raise ModelNotLoaded(f"model {request.modelId} is not loaded here")
        return rt.ModelSizeResponse(sizeInBytes=size)

    def _ready_status(self, version: str) -> rt.RuntimeStatusResponse:
        limits = self._limits
        resp = rt.RuntimeStatusResponse(
            status=rt.RuntimeStatusResponse.READY,
            capacityInBytes=limits.capacity_bytes,
            maxLoadingConcurrency=limits.loading_concurrency,
            modelLoadingTimeoutMs=limits.load_timeout_ms,
            defaultModelSizeInBytes=limits.default_model_size_bytes,
            runtimeVersion=limits.runtime_version or version,
            limitModelConcurrency=limits.limit_model_concurrency,
        )
        for method, path in limits.method_infos.items():
            resp.methodInfos[method].idInjectionPath.extend(path)
        return resp
