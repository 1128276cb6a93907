"""I/O: hands payloads to the configured sinks without ever holding a request up.

`offer` is synchronous and never waits: the payload joins the bounded queue
(MM_PAYLOAD_PROCESSORS_CAPACITY) of each processor that wants it or, when that queue is full
because its sink is slow or hanging, is dropped there and counted
(`modelmesh_payload_processor_dropped_total`). Each processor has its own queue and workers
(MM_PAYLOAD_PROCESSORS_THREADS), so one hanging sink never starves another. Loggers write a
line, http(s) sinks get a JSON POST with a per-send time limit; a failed send is logged and
counted, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aiohttp
from prometheus_client import Counter

from mmesh.router.payloads import Payload, Processor, SinkKind, body, log_line

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0


class PayloadSinks:
    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        capacity: int,
        workers: int,
        dropped: Counter,
        failed: Counter,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        self.processors = tuple(processors)
        self._queues: list[asyncio.Queue[Payload]] = [
            asyncio.Queue(capacity) for _ in self.processors
        ]
        self._workers = workers
        self._dropped = dropped
        self._failed = failed
        self._timeout = aiohttp.ClientTimeout(total=send_timeout_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._drain(processor, queue))
            for processor, queue in zip(self.processors, self._queues, strict=True)
            for _ in range(self._workers)
        ]

    def offer(self, payload: Payload) -> None:
        for processor, queue in zip(self.processors, self._queues, strict=True):
            if not processor.wants(payload):
                continue
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self._dropped.inc()

    async def _drain(self, processor: Processor, queue: asyncio.Queue[Payload]) -> None:
        while True:
            payload = await queue.get()
            await self._send(processor, payload)

    async def _send(self, processor: Processor, payload: Payload) -> None:
        if processor.kind is SinkKind.LOGGER:
            logger.info("%s", log_line(payload))
            return
        assert self._session is not None
        try:
            async with self._session.post(
                processor.url, data=body(payload), headers={"Content-Type": "application/json"}
            ) as response:
                if response.status >= 300:
                    self._failed.inc()
                    logger.warning(
                        "payload sink %s answered %d for %s", processor.url, response.status,
                        payload.id,
                    )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self._failed.inc()
            logger.warning("payload sink %s failed for %s: %r", processor.url, payload.id, exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
