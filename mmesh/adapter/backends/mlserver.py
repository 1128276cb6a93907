"""MLServer behind the adapter: one `model-settings.json` per model under
`<root>/_mlserver_models/<modelId>/` (MLServer's repository root), then an explicit
RepositoryModelLoad. The settings point at the pulled files; nothing is copied."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import (
    read_json_object,
    remove_model_dirs,
    remove_tree,
    write_text_atomic,
)
from mmesh.adapter.backends.repository import RepositoryClient
from mmesh.adapter.errors import InvalidModelRequest
from mmesh.adapter.layout import MLSERVER_SETTINGS_FILE, render_mlserver_settings

logger = logging.getLogger(__name__)

REPOSITORY_DIR_NAME = "_mlserver_models"


class MLServerBackend:
    def __init__(
        self, client: RepositoryClient, *, root_model_dir: Path, load_timeout_s: float
    ) -> None:
        self._client = client
        self.repository_dir = root_model_dir / REPOSITORY_DIR_NAME
        self._load_timeout_s = load_timeout_s

    async def ready_version(self) -> str | None:
        return await self._client.ready_version()

    async def purge(self) -> None:
        for name in await self._client.model_names():
            logger.info("purging model %s left in mlserver from an earlier life", name)
            await self._client.unload(name)
        await asyncio.to_thread(remove_model_dirs, self.repository_dir)

    async def load(self, model: PreparedModel) -> None:
        await asyncio.to_thread(self._write_settings, model)
        await self._client.load(model.model_id, timeout_s=self._load_timeout_s)

    async def unload(self, model_id: str) -> None:
        await self._client.unload(model_id)
        await asyncio.to_thread(remove_tree, self.repository_dir / model_id)

    async def close(self) -> None:
        await self._client.close()

    def _write_settings(self, model: PreparedModel) -> None:
        shipped = model.local_path / MLSERVER_SETTINGS_FILE
        try:
            user_settings = read_json_object(shipped) if model.local_path.is_dir() else None
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidModelRequest(
                f"{MLSERVER_SETTINGS_FILE} shipped with model {model.model_id} is not valid "
                f"JSON: {exc}"
            ) from exc
        uri = _absolute_uri(model.local_path, user_settings)
        settings = render_mlserver_settings(
            model.model_id,
            model.model_format,
            model_uri=str(uri),
            user_settings=user_settings,
            schema=model.schema,
        )
        write_text_atomic(
            self.repository_dir / model.model_id / MLSERVER_SETTINGS_FILE,
            json.dumps(settings, indent=2),
        )


def _absolute_uri(local_path: Path, user_settings: dict[str, object] | None) -> Path:
    """The shipped settings' relative uri is relative to the model dir; default: the model."""
    params = (user_settings or {}).get("parameters")
    uri = params.get("uri") if isinstance(params, dict) else None
    if isinstance(uri, str) and uri:
        resolved = (local_path / uri).resolve()
        if not resolved.is_relative_to(local_path.resolve()):
            raise InvalidModelRequest(f"uri {uri!r} in {MLSERVER_SETTINGS_FILE} escapes the model")
        return resolved
    return local_path
