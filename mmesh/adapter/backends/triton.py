"""Triton behind the adapter: `<root>/_triton_models/<modelId>/config.pbtxt` plus version
directories linking to the pulled files, then an explicit RepositoryModelLoad. Triton must run
with `--model-control-mode=explicit --strict-model-config=false`."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import remove_model_dirs, remove_tree, write_text_atomic
from mmesh.adapter.backends.repository import RepositoryClient
from mmesh.adapter.layout import TRITON_CONFIG_FILE, TritonLayout, plan_triton_layout

logger = logging.getLogger(__name__)

REPOSITORY_DIR_NAME = "_triton_models"


class TritonBackend:
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
            logger.info("purging model %s left in triton from an earlier life", name)
            await self._client.unload(name)
        await asyncio.to_thread(remove_model_dirs, self.repository_dir)

    async def load(self, model: PreparedModel) -> None:
        await asyncio.to_thread(self._write_layout, model)
        await self._client.load(model.model_id, timeout_s=self._load_timeout_s)

    async def unload(self, model_id: str) -> None:
        await self._client.unload(model_id)
        await asyncio.to_thread(remove_tree, self.repository_dir / model_id)

    async def close(self) -> None:
        await self._client.close()

    def _write_layout(self, model: PreparedModel) -> None:
        layout = _plan(model)
        target = self.repository_dir / model.model_id
        remove_tree(target)
        for source, link in layout.links:
            dest = target / link
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink((model.local_path / source).resolve(), dest)
        write_text_atomic(target / TRITON_CONFIG_FILE, layout.config_text)


def _plan(model: PreparedModel) -> TritonLayout:
    path = model.local_path
    is_dir = path.is_dir()
    entries = sorted(p.name for p in path.iterdir()) if is_dir else []
    shipped = path / TRITON_CONFIG_FILE
    user_config = shipped.read_text() if is_dir and shipped.is_file() else None
    return plan_triton_layout(
        model.model_id,
        model.model_format,
        pulled_is_dir=is_dir,
        pulled_entries=entries,
        user_config=user_config,
    )
