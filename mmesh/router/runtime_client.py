"""Client of the local runtime's ModelRuntime API (the adapter or a custom runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from mmesh.router.errors import LoadFailed, RequestTimeout, RuntimeUnavailable
from mmesh.router.forwarding import RECONNECT_OPTIONS

logger = logging.getLogger(__name__)

PREDICT_SIZE_DEADLINE_S = 0.5
MODEL_SIZE_DEADLINE_S = 30.0
STATUS_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What the runtime said about itself at start-up."""

    capacity_bytes: int
    loading_concurrency: int
    load_timeout_ms: int
    default_model_size_bytes: int
    version: str
    id_injection: dict[str, tuple[int, ...]]
    """Fully qualified method ("pkg.Service/Method") -> field path that gets the model id."""
    allow_any_method: bool

    @classmethod
    def from_status(cls, status: rt.RuntimeStatusResponse) -> RuntimeInfo:
        injection = {m: tuple(info.idInjectionPath) for m, info in status.methodInfos.items()}
        return cls(
            status.capacityInBytes,
            status.maxLoadingConcurrency,
            status.modelLoadingTimeoutMs,
            status.defaultModelSizeInBytes,
            status.runtimeVersion,
            injection,
            status.allowAnyMethod or not injection,
        )


def check_runtime_info(info: RuntimeInfo) -> None:
    """The reference's start-up validation of what a runtime reports."""
    unit = 8192
    if info.loading_concurrency < 1:
        raise ValueError("runtime reports maxLoadingConcurrency < 1")
    if info.load_timeout_ms < 100:
        raise ValueError("runtime reports modelLoadingTimeoutMs < 100")
    if info.default_model_size_bytes < unit:
        raise ValueError("runtime reports defaultModelSizeInBytes below 8 KiB")
    floor = max(
        2 * info.default_model_size_bytes,
        min(512 * 1024 * 1024, 10 * info.default_model_size_bytes),
    )
    if info.capacity_bytes < floor:
        raise ValueError(f"runtime capacity {info.capacity_bytes} is below the minimum {floor}")


@contextlib.contextmanager
def _map_errors(what: str) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            raise RuntimeUnavailable(f"runtime unavailable during {what}: {exc.details()}") from exc
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise RequestTimeout(f"{what} timed out: {exc.details()}") from exc
        raise LoadFailed(exc.details() or f"{what} failed with {code.name}") from exc


class RuntimeClient:
    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(target, options=RECONNECT_OPTIONS)
        self._stub = rt_grpc.ModelRuntimeStub(self._channel)

    async def wait_ready(self, timeout_s: float) -> RuntimeInfo:
        """Poll runtimeStatus until READY (the runtime purges leftovers first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                status = await self._stub.runtimeStatus(rt.RuntimeStatusRequest(), timeout=10)
                if status.status == rt.RuntimeStatusResponse.READY:
                    return RuntimeInfo.from_status(status)
            except grpc.aio.AioRpcError as exc:
                logger.info("runtime at %s not answering yet: %s", self.target, exc.code().name)
            if loop.time() > deadline:
                raise RuntimeUnavailable(
                    f"runtime at {self.target} not READY after {timeout_s:.0f}s"
                )
            await asyncio.sleep(STATUS_POLL_S)

    async def load(
        self, model_id: str, model_type: str, model_path: str, model_key: str, *, timeout_s: float
    ) -> int:
        with _map_errors(f"loading {model_id}"):
            resp = await self._stub.loadModel(
                rt.LoadModelRequest(
                    modelId=model_id, modelType=model_type, modelPath=model_path, modelKey=model_key
                ),
                timeout=timeout_s,
            )
        return resp.sizeInBytes

    async def unload(self, model_id: str, *, timeout_s: float) -> None:
        with _map_errors(f"unloading {model_id}"):
            await self._stub.unloadModel(rt.UnloadModelRequest(modelId=model_id), timeout=timeout_s)

    async def predict_size(
        self, model_id: str, model_type: str, model_path: str, model_key: str
    ) -> int | None:
        try:
            resp = await self._stub.predictModelSize(
                rt.PredictModelSizeRequest(
                    modelId=model_id, modelType=model_type, modelPath=model_path, modelKey=model_key
                ),
                timeout=PREDICT_SIZE_DEADLINE_S,
            )
        except grpc.aio.AioRpcError:
            return None  # optional RPC: the default size stands in
        return resp.sizeInBytes or None

    async def model_size(self, model_id: str) -> int | None:
        try:
            resp = await self._stub.modelSize(
                rt.ModelSizeRequest(modelId=model_id), timeout=MODEL_SIZE_DEADLINE_S
            )
        except grpc.aio.AioRpcError:
            return None
        return resp.sizeInBytes or None

    async def close(self) -> None:
        await self._channel.close(None)
