"""Puller: brings a model's files from storage to `<ROOT_MODEL_DIR>/<modelId>/`.

parse the modelKey -> read storage-config (on every pull, so secret updates apply) ->
resolve the storage spec -> plan the local target -> download or link -> size on disk.

Every error a pull raises has the storage secrets masked out of its message (and its
library cause dropped), whatever produced it: the message reaches the router, the model's
status and the logs, and storage-config entries hold credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mmesh.adapter.backends.files import disk_size_bytes, remove_tree
from mmesh.adapter.errors import AdapterError, InvalidModelRequest, StorageError
from mmesh.adapter.layout import parse_schema
from mmesh.adapter.storage.config import read_storage_configs
from mmesh.adapter.storage.provider import StorageProvider, provider_for
from mmesh.adapter.storage.spec import ModelKey, plan_local_target, resolve_storage
from mmesh.core.redaction import scrub, secret_values

logger = logging.getLogger(__name__)

SCHEMA_FILE_NAME = "_schema.json"
OWNED_MARKER = ".mmesh-models"
"""Present in ROOT_MODEL_DIR once the adapter owns it; purge empties only an owned dir."""


@dataclass(frozen=True, slots=True)
class PulledModel:
    local_path: Path
    disk_size_bytes: int
    schema: dict[str, Any] | None
    schema_path: Path | None = None
    """Where the schema file landed (handed to a custom runtime as is)."""


class Puller:
    def __init__(
        self, *, root_model_dir: Path, storage_config_dir: Path, pvc_mounts_dir: Path
    ) -> None:
        self.root_model_dir = root_model_dir
        self._storage_config_dir = storage_config_dir
        self._pvc_mounts_dir = pvc_mounts_dir

    def model_dir(self, model_id: str) -> Path:
        return Path(plan_local_target(PurePosixPath(self.root_model_dir), model_id, "").model_dir)

    async def pull(self, model_id: str, model_path: str, key: ModelKey) -> PulledModel:
        configs = await asyncio.to_thread(read_storage_configs, self._storage_config_dir)
        with secrets_masked(secret_values([configs, key.storage_params])):
            return await self._pull(model_id, model_path, key, configs)

    async def _pull(
        self, model_id: str, model_path: str, key: ModelKey, configs: dict[str, dict[str, Any]]
    ) -> PulledModel:
        spec = resolve_storage(key, configs)
        target = plan_local_target(PurePosixPath(self.root_model_dir), model_id, model_path)
        provider = provider_for(spec, pvc_mounts_dir=self._pvc_mounts_dir)
        local = await provider.pull(spec, target.remote_path, Path(target.local_path))
        schema, schema_file = await self._pull_schema(provider, spec, model_id, key.schema_path)
        size = await asyncio.to_thread(disk_size_bytes, local)
        return PulledModel(local, size, schema, schema_file)

    async def _pull_schema(
        self, provider: StorageProvider, spec: Any, model_id: str, schema_path: str | None
    ) -> tuple[dict[str, Any] | None, Path | None]:
        if not schema_path:
            return None, None
        root = PurePosixPath(self.root_model_dir)
        target = plan_local_target(root, model_id, schema_path)
        local = Path(target.model_dir) / SCHEMA_FILE_NAME
        pulled = await provider.pull(spec, target.remote_path, local)
        try:
            text = await asyncio.to_thread(pulled.read_text)
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidModelRequest(f"cannot read model schema {schema_path}: {exc}") from exc
        return parse_schema(text), pulled

    async def remove(self, model_id: str) -> None:
        await asyncio.to_thread(remove_tree, self.model_dir(model_id))

    async def purge(self) -> None:
        """Remove every pulled model; `_`-prefixed entries belong to the backends."""
        await asyncio.to_thread(self._purge_files)

    def _purge_files(self) -> None:
        root = self.root_model_dir
        root.mkdir(parents=True, exist_ok=True)
        marker = root / OWNED_MARKER
        leftovers = [p for p in root.iterdir() if not p.name.startswith(("_", "."))]
        if leftovers and not marker.exists():
            logger.warning("not clearing %s: it holds files the adapter did not put there", root)
            return
        for path in leftovers:
            logger.info("removing model files left from an earlier life: %s", path.name)
            remove_tree(path)
        marker.touch()


@contextlib.contextmanager
def secrets_masked(secrets: Collection[str]) -> Iterator[None]:
    """Re-raise what the block raises with `secrets` masked out of the message.

    Our own errors keep their class (and so their status code); anything else, a
    library's own exception, becomes a StorageError. The cause is dropped in both cases,
    so a traceback cannot show a library's unmasked message either.
    """
    try:
        yield
    except AdapterError as exc:
        message = str(exc)
        masked = scrub(message, secrets)
        if masked == message:
            raise
        exc.args = (masked,)
        raise exc from None
    except Exception as exc:  # noqa: BLE001 - any library's error may quote a secret
        details = scrub("".join(traceback.format_exception(exc)), secrets)
        logger.warning("model pull failed unexpectedly:\n%s", details)
        kind = type(exc).__name__
        raise StorageError(scrub(f"pull failed: {kind}: {exc}", secrets)) from None
