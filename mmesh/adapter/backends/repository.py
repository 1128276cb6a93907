"""Client of the V2 model-repository extension that MLServer and Triton both serve on
`inference.GRPCInferenceService`: readiness, index, explicit load and unload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import remove_model_dirs, remove_tree
from mmesh.adapter.errors import ModelLoadFailed, RuntimeUnavailable
from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import grpc_predict_v2_pb2_grpc as v2_grpc

logger = logging.getLogger(__name__)

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@contextlib.contextmanager
def _map_errors(what: str, target: str) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _UNREACHABLE:
            raise RuntimeUnavailable(
                f"model server at {target} is unavailable during {what}: {exc.details()}"
            ) from exc
        raise ModelLoadFailed(f"{what} failed: {exc.details()}") from exc


class RepositoryClient:
    def __init__(self, target: str, *, call_timeout_s: float = 5.0) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", -1)]
        )
        self._stub = v2_grpc.GRPCInferenceServiceStub(self._channel)
        self._timeout_s = call_timeout_s

    async def ready_version(self) -> str | None:
        try:
            ready = await self._stub.ServerReady(v2.ServerReadyRequest(), timeout=self._timeout_s)
            if not ready.ready:
                return None
            meta = await self._stub.ServerMetadata(
                v2.ServerMetadataRequest(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            logger.debug("model server at %s not ready: %s", self.target, exc.code())
            return None
        return f"{meta.name}-{meta.version}" if meta.name else meta.version

    async def model_names(self) -> list[str]:
        with _map_errors("repository index", self.target):
            index = await self._stub.RepositoryIndex(
                v2.RepositoryIndexRequest(), timeout=self._timeout_s
            )
        return [m.name for m in index.models]

    async def load(self, model_id: str, *, timeout_s: float) -> None:
        with _map_errors(f"loading model {model_id}", self.target):
            await self._stub.RepositoryModelLoad(
                v2.RepositoryModelLoadRequest(model_name=model_id), timeout=timeout_s
            )

    async def unload(self, model_id: str) -> None:
        try:
            with _map_errors(f"unloading model {model_id}", self.target):
                await self._stub.RepositoryModelUnload(
                    v2.RepositoryModelUnloadRequest(model_name=model_id),
                    timeout=self._timeout_s * 6,
                )
        except ModelLoadFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and _is_unknown_model(cause):
                return
            raise

    async def close(self) -> None:
        await self._channel.close(None)


def _is_unknown_model(exc: grpc.aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return (
        exc.code() == grpc.StatusCode.NOT_FOUND
        or "not found" in details
        or ("unknown model" in details)
    )


class RepositoryBackend:
    """A model server driven through the repository API, with one directory per model
    under `<root>/<repository dir>/`. Subclasses write that directory's layout."""

    server_name = "model server"
    repository_dir_name = "_models"

    def __init__(
        self, client: RepositoryClient, *, root_model_dir: Path, load_timeout_s: float
    ) -> None:
        self._client = client
        self.repository_dir = root_model_dir / self.repository_dir_name
        self._load_timeout_s = load_timeout_s

    async def ready_version(self) -> str | None:
        return await self._client.ready_version()

    async def purge(self) -> None:
        for name in await self._client.model_names():
            logger.info("purging model %s left in %s from an earlier life", name, self.server_name)
            await self._client.unload(name)
        await asyncio.to_thread(remove_model_dirs, self.repository_dir)

    async def load(self, model: PreparedModel) -> int | None:
        await asyncio.to_thread(self.write_layout, model)
        await self._client.load(model.model_id, timeout_s=self._load_timeout_s)
        return None

    async def unload(self, model_id: str) -> None:
        await self._client.unload(model_id)
        await asyncio.to_thread(remove_tree, self.repository_dir / model_id)

    async def close(self) -> None:
        await self._client.close()

    def write_layout(self, model: PreparedModel) -> None:
        raise NotImplementedError
