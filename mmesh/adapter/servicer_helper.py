"""Storage-helper mode (`ADAPTER_SERVER_TYPE=puller`): the `puller` sidecar of a custom
ServingRuntime.

The router calls this process as it would call the runtime (INTERNAL_GRPC_PORT 8086); it
pulls a model's files as the built-in adapters do, then hands the custom runtime's own
`mmesh.ModelRuntime` API (MODEL_SERVER_ENDPOINT) the same request with the local path:

    loadModel      pull -> runtime.loadModel(modelPath=<local>, modelKey=<storage fields
                   dropped, disk_size_bytes and local schema_path added>) -> its answer
    unloadModel    runtime.unloadModel (NOT_FOUND is fine) -> remove the files
    runtimeStatus  runtime.runtimeStatus; once READY, forget every model and file here;
                   capacity, concurrency, timeouts and methodInfos are the runtime's own
    predictModelSize / modelSize   forwarded as they are

Loads and unloads of one model id never overlap. A runtime error reaches the router with
the runtime's status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mmesh.adapter.errors import InvalidModelRequest, RuntimeUnavailable, StorageError
from mmesh.adapter.loading import KeyedLock, valid_model_id
from mmesh.adapter.puller import Puller
from mmesh.adapter.runtime_client import STATUS_TIMEOUT_S, RuntimeClient
from mmesh.adapter.servicer import Context, grpc_errors
from mmesh.adapter.storage.spec import local_model_key, parse_model_key
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc

logger = logging.getLogger(__name__)


def _remaining(context: Context) -> float | None:
    remaining: Any = context.time_remaining()
    return None if remaining is None else max(0.0, float(remaining))


class StorageHelperServicer(rt_grpc.ModelRuntimeServicer):
    def __init__(self, puller: Puller, runtime: RuntimeClient) -> None:
        self._puller = puller
        self._runtime = runtime
        self._serialized = KeyedLock()
        self._models: set[str] = set()
        """Ids this helper pulled and handed to the runtime (loaded or being loaded)."""

    @grpc_errors
    async def runtimeStatus(
        self, request: rt.RuntimeStatusRequest, context: Context
    ) -> rt.RuntimeStatusResponse:
        try:
            status = await self._runtime.status()
        except RuntimeUnavailable as exc:
            logger.info("custom runtime not up yet: %s", exc)
            return rt.RuntimeStatusResponse(status=rt.RuntimeStatusResponse.STARTING)
        if status.status == rt.RuntimeStatusResponse.READY:
            await self._forget_everything()
        return status

    async def _forget_everything(self) -> None:
        """The router starts from zero: models it does not know of must go, with their files."""
        for model_id in sorted(self._models):
            async with self._serialized(model_id):
                await self._runtime.unload(model_id, STATUS_TIMEOUT_S)
                self._models.discard(model_id)
        await self._puller.purge()

    @grpc_errors
    async def loadModel(
        self, request: rt.LoadModelRequest, context: Context
    ) -> rt.LoadModelResponse:
        model_id = valid_model_id(request.modelId)
        key = parse_model_key(request.modelKey)
        async with self._serialized(model_id):
            self._models.add(model_id)
            try:
                async with asyncio.timeout(_remaining(context)):
                    pulled = await self._puller.pull(model_id, request.modelPath, key)
                schema = str(pulled.schema_path) if pulled.schema_path else None
                local = rt.LoadModelRequest(
                    modelId=model_id,
                    modelType=request.modelType,
                    modelPath=str(pulled.local_path),
                    modelKey=local_model_key(
                        request.modelKey, disk_size_bytes=pulled.disk_size_bytes, schema_path=schema
                    ),
                )
                resp = await self._runtime.load(local, _remaining(context))
            except BaseException:
                self._models.discard(model_id)
                with contextlib.suppress(StorageError):
                    await self._puller.remove(model_id)
                raise
            logger.info(
                "runtime loaded model %s from %s (%d bytes on disk, size %d)",
                model_id,
                pulled.local_path,
                pulled.disk_size_bytes,
                resp.sizeInBytes,
            )
            return resp

    @grpc_errors
    async def unloadModel(
        self, request: rt.UnloadModelRequest, context: Context
    ) -> rt.UnloadModelResponse:
        model_id = valid_model_id(request.modelId)
        async with self._serialized(model_id):
            await self._runtime.unload(model_id, _remaining(context))
            await self._puller.remove(model_id)
            self._models.discard(model_id)
        return rt.UnloadModelResponse()

    @grpc_errors
    async def predictModelSize(
        self, request: rt.PredictModelSizeRequest, context: Context
    ) -> rt.PredictModelSizeResponse:
        return await self._runtime.predict_size(request, _remaining(context))

    @grpc_errors
    async def modelSize(
        self, request: rt.ModelSizeRequest, context: Context
    ) -> rt.ModelSizeResponse:
        if not request.modelId:
            raise InvalidModelRequest("modelSize needs a modelId")
        return await self._runtime.size(request.modelId, _remaining(context))
