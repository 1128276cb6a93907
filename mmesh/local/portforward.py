"""`kubectl port-forward service/NAME PORT`, built in: a local TCP listener whose connections go
to the Service's ready pods in turn (each connection to one pod, as kube-proxy would)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

WAIT_FOR_POD_S = 5.0

Endpoints = Callable[[], list[tuple[str, int]]]
"""(address, port) of the ready pods behind the Service, asked on every new connection."""


class ServiceForward:
    def __init__(self, endpoints: Endpoints, what: str) -> None:
        self._endpoints = endpoints
        self._turn = itertools.count()
        self._what = what
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            log.warning("port-forward %s: no ready pod to forward to", self._what)
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                with contextlib.suppress(Exception):
                    end.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the next ready pod; waits up to `WAIT_FOR_POD_S` for one to turn
        ready (a pod restarting, or the first one starting), so a client that is a moment early
        is not refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_POD_S
        while True:
            upstream = await self._connect_once()
            if upstream is not None or loop.time() >= deadline:
                return upstream
            await asyncio.sleep(0.2)

    async def _connect_once(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        addresses = self._endpoints()
        start = next(self._turn)
        for i in range(len(addresses)):
            address, port = addresses[(start + i) % len(addresses)]
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(address, port), 2.0)
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the half-close on (the other way may still talk)."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.close()
