"""Client of a custom runtime's own `mmesh.ModelRuntime` API (the storage helper's target).

A runtime error keeps its gRPC status code (RuntimeCallFailed) so the router sees what the
runtime said; an unreachable runtime is RuntimeUnavailable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from mmesh.adapter.errors import RuntimeCallFailed, RuntimeUnavailable
from mmesh.core.numbers import whole_number
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc

logger = logging.getLogger(__name__)

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
STATUS_TIMEOUT_S = 10.0


def grpc_target(endpoint: str, host: str) -> str:
    """`port:8085` -> `<host>:8085`; `unix:/path` stays a unix target."""
    kind, _, value = endpoint.strip().partition(":")
    if kind == "port" and whole_number(value) is not None:
        return f"{host}:{value}"
    if kind == "unix" and value.startswith("/"):
        return f"unix:{value}"
    raise ValueError(f"endpoint {endpoint!r} is neither 'port:<N>' nor 'unix:/<path>'")


class RuntimeClient:
    """The custom runtime's ModelRuntime API, errors turned into adapter errors."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = rt_grpc.ModelRuntimeStub(self._channel)

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _UNREACHABLE:
                raise RuntimeUnavailable(
                    f"model runtime at {self.target} did not answer {what}: "
                    f"{code.name}: {exc.details()}"
                ) from exc
            raise RuntimeCallFailed(
                f"model runtime at {self.target} failed {what}: {exc.details()}", code.name
            ) from exc

    async def status(self) -> rt.RuntimeStatusResponse:
        async with self._call("runtimeStatus"):
            resp: rt.RuntimeStatusResponse = await self._stub.runtimeStatus(
                rt.RuntimeStatusRequest(), timeout=STATUS_TIMEOUT_S
            )
        return resp

    async def load(self, req: rt.LoadModelRequest, timeout_s: float | None) -> rt.LoadModelResponse:
        async with self._call(f"loadModel of {req.modelId}"):
            resp: rt.LoadModelResponse = await self._stub.loadModel(req, timeout=timeout_s)
        return resp

    async def unload(self, model_id: str, timeout_s: float | None) -> None:
        try:
            async with self._call(f"unloadModel of {model_id}"):
                await self._stub.unloadModel(
                    rt.UnloadModelRequest(modelId=model_id), timeout=timeout_s
                )
        except RuntimeCallFailed as exc:
            if exc.grpc_code != grpc.StatusCode.NOT_FOUND.name:
                raise
            logger.info("runtime did not know model %s on unload: %s", model_id, exc)

    async def predict_size(
        self, req: rt.PredictModelSizeRequest, timeout_s: float | None
    ) -> rt.PredictModelSizeResponse:
        async with self._call(f"predictModelSize of {req.modelId}"):
            resp: rt.PredictModelSizeResponse = await self._stub.predictModelSize(
                req, timeout=timeout_s
            )
        return resp

    async def size(self, model_id: str, timeout_s: float | None) -> rt.ModelSizeResponse:
        async with self._call(f"modelSize of {model_id}"):
            resp: rt.ModelSizeResponse = await self._stub.modelSize(
                rt.ModelSizeRequest(modelId=model_id), timeout=timeout_s
            )
        return resp

    async def close(self) -> None:
        await self._channel.close(None)
