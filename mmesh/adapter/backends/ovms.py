"""OpenVINO Model Server behind the adapter.

Each model gets `<root>/_ovms_models/<modelId>/<version>/` linking to the pulled files, and
an entry in the multi-model config file OVMS was started with (`--config_path`, default
`<root>/model_config_list.json`, `--file_system_poll_wait_seconds=0`). Loads and unloads
rewrite that file and ask OVMS to apply it (`POST /v1/config/reload` on its REST port);
requests arriving within BATCH_WAIT_TIME_MIN_MS share one reload, as OVMS reloads the whole
config each time. A load succeeds once OVMS reports a version of the model AVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import (
    remove_model_dirs,
    remove_tree,
    write_text_atomic,
)
from mmesh.adapter.errors import AdapterError, ModelLoadFailed, RuntimeUnavailable
from mmesh.adapter.layout import plan_ovms_layout
from mmesh.adapter.serverapi import (
    ovms_error_text,
    ovms_load_failure,
    parse_ovms_config,
    render_ovms_config,
)

logger = logging.getLogger(__name__)

REPOSITORY_DIR_NAME = "_ovms_models"
STATUS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    status: dict[str, Any]
    """Model name -> its `model_version_status` entry, as OVMS reported after the reload."""
    error: str | None = None
    """OVMS's answer when the reload itself failed (the statuses then come from /v1/config)."""


class OvmsBackend:
    def __init__(
        self,
        base_url: str,
        *,
        root_model_dir: Path,
        config_file: Path,
        batch_wait_s: float,
        reload_timeout_s: float,
    ) -> None:
        self._url = base_url.rstrip("/")
        self.repository_dir = root_model_dir / REPOSITORY_DIR_NAME
        self._config_file = config_file
        self._batch_wait_s = batch_wait_s
        self._reload_timeout_s = reload_timeout_s
        self._models: dict[str, str] = _read_config(config_file)
        """What OVMS should serve: model id -> base path (survives an adapter restart)."""
        self._written: dict[str, str] = dict(self._models)
        self._session: aiohttp.ClientSession | None = None
        self._reload_lock = asyncio.Lock()
        self._pending: asyncio.Future[ReloadResult] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def ready_version(self) -> str | None:
        try:
            await self._config_status()
        except (RuntimeUnavailable, ModelLoadFailed) as exc:
            logger.debug("OVMS not ready: %s", exc)
            return None
        return "ovms"

    async def purge(self) -> None:
        if self._written or self._models:
            self._models.clear()
            await self._sync()
        await asyncio.to_thread(remove_model_dirs, self.repository_dir)

    async def load(self, model: PreparedModel) -> int | None:
        base_path = await asyncio.to_thread(self._write_layout, model)
        self._models[model.model_id] = str(base_path)
        result = await self._sync()
        failure = ovms_load_failure(result.status, model.model_id)
        if failure is not None:
            self._models.pop(model.model_id, None)
            if result.error:
                failure += f" (config reload answered {result.error})"
            raise ModelLoadFailed(failure)
        return None

    async def unload(self, model_id: str) -> None:
        self._models.pop(model_id, None)
        if model_id in self._written:
            result = await self._sync()
            if result.error:
                logger.warning("OVMS config reload for unload of %s: %s", model_id, result.error)
        await asyncio.to_thread(remove_tree, self.repository_dir / model_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------ layout

    def _write_layout(self, model: PreparedModel) -> Path:
        path = model.local_path
        is_dir = path.is_dir()
        dirs = sorted(p.name for p in path.iterdir() if p.is_dir()) if is_dir else []
        layout = plan_ovms_layout(
            model.model_format, pulled_name=path.name, pulled_is_dir=is_dir, pulled_dirs=dirs
        )
        base = self.repository_dir / model.model_id
        remove_tree(base)
        link = base / layout.link
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((path / layout.source).resolve(), link)
        return base

    # ------------------------------------------------------------ config reloads

    async def _sync(self) -> ReloadResult:
        """Have OVMS apply the current model set; concurrent callers share one reload."""
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._reload_soon(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(pending)

    async def _reload_soon(self, result: asyncio.Future[ReloadResult]) -> None:
        await asyncio.sleep(self._batch_wait_s)
        self._pending = None  # later changes start the next batch
        async with self._reload_lock:
            try:
                outcome = await self._reload()
            except (AdapterError, OSError) as exc:
                result.set_exception(exc)
                return
            result.set_result(outcome)

    async def _reload(self) -> ReloadResult:
        snapshot = dict(self._models)
        await asyncio.to_thread(write_text_atomic, self._config_file, render_ovms_config(snapshot))
        self._written = snapshot
        status, body = await self._request("POST", "/v1/config/reload", self._reload_timeout_s)
        if status in (200, 201):
            return ReloadResult(_json_object(body, "config reload"))
        error = ovms_error_text(status, body)
        logger.warning("OVMS config reload failed: %s; reading model statuses", error)
        return ReloadResult(await self._config_status(), error)

    async def _config_status(self) -> dict[str, Any]:
        status, body = await self._request("GET", "/v1/config", STATUS_TIMEOUT_S)
        if status != 200:
            raise ModelLoadFailed(f"OVMS config status failed: {ovms_error_text(status, body)}")
        return _json_object(body, "config status")

    async def _request(self, method: str, path: str, timeout_s: float) -> tuple[int, str]:
        url = self._url + path
        try:
            async with self._http().request(
                method, url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeUnavailable(
                f"OVMS at {self._url} did not answer {method} {path}: {type(exc).__name__}: {exc}"
            ) from exc


def _read_config(path: Path) -> dict[str, str]:
    with contextlib.suppress(OSError):
        return parse_ovms_config(path.read_text())
    return {}


def _json_object(body: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ModelLoadFailed(f"OVMS {what} answer is not JSON: {body[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadFailed(f"OVMS {what} answer is not a JSON object: {body[:200]!r}")
    return doc
