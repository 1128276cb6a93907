"""TorchServe behind the adapter, through its REST management API.

The model store is `<root>/_torchserve_models/`: each model is a link there named after its
id (`<id>.mar` to the pulled archive, or `<id>` to an unpacked archive directory), registered
with `POST /models?url=<link>&model_name=<id>&initial_workers=N&synchronous=true` and removed
with `DELETE /models/<id>`. At start the adapter writes the store's `mmconfig.properties`,
which the runtime container waits for and starts TorchServe with (TS_CONFIG_FILE): loopback
addresses, REST management on RUNTIME_PORT, gRPC inference on the data endpoint's port.

A model's size is its workers' memory as TorchServe reports it (plus 10 %). TorchServe
measures that memory once per `metric_time_interval` (written into its config), so a load
waits for the next measurement, at most one interval and a margin (and never more than half
the load timeout); a model whose workers report none by then is sized from its disk size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import remove_tree, write_text_atomic
from mmesh.adapter.errors import ModelLoadFailed, RuntimeUnavailable
from mmesh.adapter.layout import (
    MAR_MANIFEST,
    TorchServeLayout,
    plan_torchserve_layout,
    torchserve_store_name,
)
from mmesh.adapter.serverapi import (
    TorchServePorts,
    render_torchserve_config,
    torchserve_error_text,
    torchserve_model_page,
    torchserve_worker_memory,
)

logger = logging.getLogger(__name__)

STORE_DIR_NAME = "_torchserve_models"
CONFIG_FILE_NAME = "mmconfig.properties"
STATUS_TIMEOUT_S = 5.0
PAGE_SIZE = 500
MEMORY_PROBE_INTERVAL_S = 0.5
MEMORY_WAIT_MARGIN_S = 2.0
"""Beyond one metrics interval: TorchServe's measuring pass itself takes a moment."""
MEMORY_HEADROOM = 1.1


class TorchServeBackend:
    def __init__(
        self,
        base_url: str,
        *,
        root_model_dir: Path,
        load_timeout_s: float,
        workers: int = 1,
        batch_size: int = 0,
        max_batch_delay_ms: int = 0,
        metric_interval_s: int = 10,
    ) -> None:
        self._url = base_url.rstrip("/")
        self.store_dir = root_model_dir / STORE_DIR_NAME
        self._load_timeout_s = load_timeout_s
        self._workers = max(1, workers)
        self._batch_size = batch_size
        self._max_batch_delay_ms = max_batch_delay_ms
        self._metric_interval_s = metric_interval_s
        self._session: aiohttp.ClientSession | None = None

    def write_config(self, ports: TorchServePorts) -> Path:
        """The config TorchServe starts with; written before it starts (it waits for it)."""
        path = self.store_dir / CONFIG_FILE_NAME
        text = render_torchserve_config(
            str(self.store_dir), ports, metric_interval_s=self._metric_interval_s
        )
        write_text_atomic(path, text)
        return path

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def ready_version(self) -> str | None:
        try:
            status, _ = await self._request("GET", "/models?limit=1", STATUS_TIMEOUT_S)
        except RuntimeUnavailable as exc:
            logger.debug("TorchServe not ready: %s", exc)
            return None
        return "torchserve" if status == 200 else None

    async def purge(self) -> None:
        for name in await self._registered():
            logger.info("purging model %s left in torchserve from an earlier life", name)
            await self._unregister(name)
        await asyncio.to_thread(self._clear_store)

    async def load(self, model: PreparedModel) -> int | None:
        store_name = await asyncio.to_thread(self._link, model)
        params = {
            "url": store_name,
            "model_name": model.model_id,
            "initial_workers": str(self._workers),
            "synchronous": "true",
        }
        if self._batch_size:
            params["batch_size"] = str(self._batch_size)
        if self._max_batch_delay_ms:
            params["max_batch_delay"] = str(self._max_batch_delay_ms)
        status, body = await self._request("POST", "/models", self._load_timeout_s, params=params)
        if status != 200:
            raise ModelLoadFailed(
                f"torchserve did not register model {model.model_id}: "
                f"{torchserve_error_text(status, body)}"
            )
        logger.info("torchserve registered %s: %s", model.model_id, body.strip())
        memory = await self._worker_memory(model.model_id)
        return int(memory * MEMORY_HEADROOM) if memory else None

    async def unload(self, model_id: str) -> None:
        await self._unregister(model_id)
        for archive in (True, False):
            name = torchserve_store_name(model_id, archive=archive)
            await asyncio.to_thread(remove_tree, self.store_dir / name)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------ steps

    def _clear_store(self) -> None:
        """Every archive and link in the store goes; the config TorchServe runs with stays."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.store_dir.iterdir():
            if entry.name != CONFIG_FILE_NAME:
                remove_tree(entry)

    def _link(self, model: PreparedModel) -> str:
        path = model.local_path
        is_dir = path.is_dir()
        layout: TorchServeLayout = plan_torchserve_layout(
            model.model_id,
            pulled_is_dir=is_dir,
            pulled_entries=sorted(p.name for p in path.iterdir()) if is_dir else [],
            has_manifest=is_dir and (path / MAR_MANIFEST).is_file(),
        )
        name = torchserve_store_name(model.model_id, archive=layout.archive)
        link = self.store_dir / name
        remove_tree(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((path / layout.source).resolve(), link)
        return name

    async def _unregister(self, model_id: str) -> None:
        status, body = await self._request(
            "DELETE", f"/models/{quote(model_id, safe='')}", self._load_timeout_s
        )
        if status == 404:
            logger.info("torchserve did not know %s on unload: %s", model_id, body.strip())
        elif status != 200:
            raise ModelLoadFailed(
                f"torchserve did not unregister model {model_id}: "
                f"{torchserve_error_text(status, body)}"
            )

    async def _registered(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            query = f"/models?limit={PAGE_SIZE}" + (f"&next_page_token={token}" if token else "")
            status, body = await self._request("GET", query, STATUS_TIMEOUT_S)
            if status != 200:
                raise ModelLoadFailed(
                    f"torchserve did not list its models: {torchserve_error_text(status, body)}"
                )
            page, token = torchserve_model_page(_json(body))
            names.extend(page)
            if token is None:
                return names

    async def _worker_memory(self, model_id: str) -> int:
        """The workers' memory once TorchServe has measured it; 0 if it does not in time."""
        wait_s = min(self._metric_interval_s + MEMORY_WAIT_MARGIN_S, self._load_timeout_s / 2)
        probes = 1 + int(wait_s / MEMORY_PROBE_INTERVAL_S)
        for attempt in range(probes):
            if attempt:
                await asyncio.sleep(MEMORY_PROBE_INTERVAL_S)
            status, body = await self._request(
                "GET", f"/models/{quote(model_id, safe='')}", STATUS_TIMEOUT_S
            )
            memory = torchserve_worker_memory(_json(body)) if status == 200 else 0
            if memory:
                return memory
        logger.info(
            "torchserve reported no worker memory for %s within %.1f s; sizing from disk",
            model_id,
            wait_s,
        )
        return 0

    async def _request(
        self, method: str, path: str, timeout_s: float, params: dict[str, str] | None = None
    ) -> tuple[int, str]:
        try:
            async with self._http().request(
                method,
                self._url + path,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                status, body = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeUnavailable(
                f"torchserve at {self._url} did not answer {method} {path.split('?')[0]}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if status == 503:
            raise RuntimeUnavailable(
                f"torchserve at {self._url} is unavailable: {torchserve_error_text(status, body)}"
            )
        return status, body


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
