"""Load and unload orchestration: pull -> lay out -> load into the server -> size.

Operations on one model id never overlap (a per-id lock); different ids run in parallel.
A load that fails, times out or is cancelled leaves nothing behind: the server is told to
unload and the pulled files are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mmesh.adapter.backends.backend import Backend, PreparedModel
from mmesh.adapter.errors import (
    AdapterError,
    InvalidModelRequest,
    LoadTimeout,
    StorageError,
)
from mmesh.adapter.layout import model_format
from mmesh.adapter.puller import Puller
from mmesh.adapter.sizing import estimate_size_bytes
from mmesh.adapter.storage.spec import parse_model_key
from mmesh.core.ids import InvalidIdError, parse_model_id

logger = logging.getLogger(__name__)

RESERVED_ID_PREFIXES = ("_", ".")
"""The model root holds the backends' repositories (`_mlserver_models`) and the puller's
ownership marker (`.mmesh-models`); a model id must not name either."""


@dataclass(frozen=True, slots=True)
class SizingPolicy:
    multiplier: float
    default_bytes: int


class ModelLoader:
    def __init__(
        self, *, puller: Puller, backend: Backend, sizing: SizingPolicy, load_timeout_s: float
    ) -> None:
        self._puller = puller
        self._backend = backend
        self._sizing = sizing
        self._timeout_s = load_timeout_s
        self._sizes: dict[str, int] = {}
        self._serialized = KeyedLock()

    async def load(self, model_id: str, model_type: str, model_path: str, model_key: str) -> int:
        """Returns the model's size in bytes once the server can serve it."""
        model_id = valid_model_id(model_id)
        key = parse_model_key(model_key)
        fmt = model_format(model_type, key.model_type)
        if not fmt:
            raise InvalidModelRequest(f"model {model_id} has no model type")
        async with self._serialized(model_id):
            try:
                async with asyncio.timeout(self._timeout_s):
                    pulled = await self._puller.pull(model_id, model_path, key)
                    measured = await self._backend.load(
                        PreparedModel(model_id, fmt, pulled.local_path, pulled.schema)
                    )
            except TimeoutError as exc:
                await self._discard(model_id)
                raise LoadTimeout(
                    f"loading model {model_id} timed out after {self._timeout_s * 1000:.0f} ms"
                ) from exc
            except BaseException:
                await self._discard(model_id)
                raise
            size = measured or estimate_size_bytes(
                pulled.disk_size_bytes,
                multiplier=self._sizing.multiplier,
                default_bytes=self._sizing.default_bytes,
            )
            self._sizes[model_id] = size
            logger.info(
                "loaded model %s (%s, %d bytes on disk, size %d)",
                model_id,
                fmt,
                pulled.disk_size_bytes,
                size,
            )
            return size

    async def unload(self, model_id: str) -> None:
        model_id = valid_model_id(model_id)
        async with self._serialized(model_id):
            await self._backend.unload(model_id)
            await self._puller.remove(model_id)
            self._sizes.pop(model_id, None)
            logger.info("unloaded model %s", model_id)

    def predicted_size(self, model_key: str) -> int:
        disk = parse_model_key(model_key).disk_size_bytes
        return estimate_size_bytes(
            disk, multiplier=self._sizing.multiplier, default_bytes=self._sizing.default_bytes
        )

    def loaded_size(self, model_id: str) -> int | None:
        return self._sizes.get(model_id)

    async def purge(self) -> None:
        """Forget every model: what the server holds and every pulled file."""
        await self._backend.purge()
        await self._puller.purge()
        self._sizes.clear()

    async def _discard(self, model_id: str) -> None:
        try:
            await self._backend.unload(model_id)
        except AdapterError as exc:
            logger.warning("cleanup of failed load of %s: unload failed: %s", model_id, exc)
        with contextlib.suppress(StorageError):  # the files may never have arrived
            await self._puller.remove(model_id)
        self._sizes.pop(model_id, None)


class KeyedLock:
    """`async with locks(key)`: one holder per key at a time; a key's lock lives only while
    someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def valid_model_id(raw: str) -> str:
    try:
        model_id = parse_model_id(raw)
    except InvalidIdError as exc:
        raise InvalidModelRequest(str(exc)) from exc
    if model_id.startswith(RESERVED_ID_PREFIXES):
        raise InvalidModelRequest(
            f"invalid model id {raw!r}: ids starting with '_' or '.' are reserved for the "
            "adapter's own entries in the model directory"
        )
    return model_id
