"""I/O: hands payloads to the configured sinks without ever holding a request up.

`offer` is synchronous and never waits: the payload joins the bounded queue
(MM_PAYLOAD_PROCESSORS_CAPACITY) of each processor that wants it or, when that queue is full
because its sink is slow or hanging, is dropped there and counted
(`modelmesh_payload_processor_dropped_total`). Each processor has its own queue and workers
(MM_PAYLOAD_PROCESSORS_THREADS), so one hanging sink never starves another. Loggers write a
line, http(s) sinks get a JSON POST with a per-send time limit; a failed send is counted, not
retried, and puts the sink on hold for `HOLD_S`: payloads offered meanwhile are dropped
(counted) instead of each paying a failing connection, and one warning per hold is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aiohttp
from prometheus_client import Counter

from mmesh.router.payloads import Payload, Processor, SinkKind, body, log_line

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
HOLD_S = 2.0
"""After a failed send, how long a sink gets no payloads."""


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
        self._held_until = [0.0] * len(self.processors)
        self._held_drops = [0] * len(self.processors)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._drain(processor, queue))
            for processor, queue in zip(self.processors, self._queues, strict=True)
            for _ in range(self._workers)
        ]

    def offer(self, payload: Payload) -> None:
        now = time.monotonic()
        for index, (processor, queue) in enumerate(zip(self.processors, self._queues, strict=True)):
            if not processor.wants(payload):
                continue
            if now < self._held_until[index]:
                self._held_drops[index] += 1
                self._dropped.inc()
                continue
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self._dropped.inc()

    async def _drain(self, processor: Processor, queue: asyncio.Queue[Payload]) -> None:
        index = self.processors.index(processor)
        while True:
            payload = await queue.get()
            problem = await self._send(processor, payload)
            if problem is not None:
                self._failed.inc()
                self._hold(index, processor, problem)

    def _hold(self, index: int, processor: Processor, problem: str) -> None:
        if time.monotonic() < self._held_until[index]:
            return  # a worker already put it on hold
        dropped, self._held_drops[index] = self._held_drops[index], 0
        logger.warning(
            "payload sink %s: %s; holding its payloads for %.0f s (%d dropped during the "
            "previous hold)",
            processor.url, problem, HOLD_S, dropped,
        )  # fmt: skip
        self._held_until[index] = time.monotonic() + HOLD_S

    async def _send(self, processor: Processor, payload: Payload) -> str | None:
        """None when sent; else what went wrong."""
        if processor.kind is SinkKind.LOGGER:
            logger.info("%s", log_line(payload))
            return None
        assert self._session is not None
        try:
            async with self._session.post(
                processor.url, data=body(payload), headers={"Content-Type": "application/json"}
            ) as response:
                if response.status >= 300:
                    return f"answered {response.status} for {payload.id}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return f"failed for {payload.id}: {exc!r}"
        return None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
