"""The local cluster's control endpoint: faults on demand, for fault drills and tests.

A small HTTP server on 127.0.0.1 (its address is `control` in the endpoints JSON):

- `GET /processes`: pid of each cluster process (etcd, kube-api, s3, operator) and of each
  container of each pod (`{"etcd": 123, ..., "pods": {"<pod>": {"mm": 456, ...}}}`);
- `POST /etcd/kill`: SIGKILL etcd and keep it down; `POST /etcd/start`: start it again on the
  same data directory and port (answers once it is healthy);
- `POST /operator/kill`: SIGKILL the operator (its supervisor starts it again, as the operator
  Deployment's kubelet would);
- `POST /pods/<pod>/containers/<container>/kill`: SIGKILL one container's processes, as an OOM
  kill does (the pod runner restarts it).

Each answers JSON; errors are 404 (no such pod or container) or 409 (not running).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp.web

log = logging.getLogger(__name__)


class Controlled(Protocol):
    """What the control endpoint drives (the LocalCluster)."""

    def process_ids(self) -> Mapping[str, Any]: ...

    async def kill_etcd(self) -> int: ...

    async def start_etcd(self) -> int: ...

    def kill_operator(self) -> int: ...

    def kill_container(self, pod: str, container: str) -> int: ...


Handler = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]]


class ControlServer:
    def __init__(self, target: Controlled) -> None:
        self._target = target
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        """Listen on host:port; the `host:port` it listens on."""
        app = aiohttp.web.Application()
        app.router.add_get("/processes", self._processes)
        app.router.add_post("/etcd/kill", self._kill_etcd)
        app.router.add_post("/etcd/start", self._start_etcd)
        app.router.add_post("/operator/kill", self._kill_operator)
        app.router.add_post("/pods/{pod}/containers/{container}/kill", self._kill_container)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        return f"{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _processes(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(dict(self._target.process_ids()))

    async def _kill_etcd(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        pid = await self._target.kill_etcd()
        log.warning("control: etcd (pid %s) killed; down until POST /etcd/start", pid)
        return aiohttp.web.json_response({"killed": pid})

    async def _start_etcd(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            pid = await self._target.start_etcd()
        except RuntimeError as exc:
            return aiohttp.web.json_response({"error": str(exc)}, status=500)
        return aiohttp.web.json_response({"started": pid})

    async def _kill_operator(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            pid = self._target.kill_operator()
        except LookupError as exc:
            return aiohttp.web.json_response({"error": str(exc)}, status=409)
        log.warning("control: operator (pid %s) killed", pid)
        return aiohttp.web.json_response({"killed": pid})

    async def _kill_container(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        pod, container = request.match_info["pod"], request.match_info["container"]
        try:
            pid = self._target.kill_container(pod, container)
        except KeyError as exc:
            return aiohttp.web.json_response({"error": str(exc.args[0])}, status=404)
        log.warning("control: container %s of pod %s (pid %s) killed", container, pod, pid)
        return aiohttp.web.json_response({"killed": pid})
