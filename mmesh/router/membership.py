"""This router's instance record: published under a lease so it disappears with the pod.

The record (capacity, usage, LRU time, model count, loads in progress, labels, zone,
version, shutting-down flag) is re-published when it changes, at most every
`min_interval_s`, and the lease is refreshed well within its time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mmesh.core.errors import LeaseExpired, StoreUnavailable
from mmesh.core.kv import KVStore, Lease
from mmesh.core.records import InstanceRecord

logger = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        kv: KVStore,
        key: str,
        snapshot: Callable[[], InstanceRecord],
        *,
        ttl_s: int,
        min_interval_s: float = 0.5,
        changed: asyncio.Event | None = None,
    ) -> None:
        """`changed`: set by whatever changes the record (the local cache, through
        `LocalModels`), so that a part built before this one can signal it."""
        self.kv = kv
        self.key = key
        self.snapshot = snapshot
        self.ttl_s = ttl_s
        self.min_interval_s = min_interval_s
        self._lease: Lease | None = None
        self._published: InstanceRecord | None = None
        self._changed = changed if changed is not None else asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._publish()
        self._task = asyncio.create_task(self._run(), name="membership")

    @property
    def lease(self) -> Lease | None:
        return self._lease

    def changed(self) -> None:
        self._changed.set()

    async def publish_now(self) -> None:
        await self._publish()

    async def _publish(self) -> None:
        if self._lease is None:
            self._lease = await self.kv.grant_lease(self.ttl_s)
        record = self.snapshot()
        await self.kv.put(self.key, record.to_json(), lease=self._lease)
        self._published = record

    async def _run(self) -> None:
        refresh_s = max(1.0, self.ttl_s / 3)
        last_refresh = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=refresh_s)
            self._changed.clear()
            try:
                if time.monotonic() - last_refresh >= refresh_s and self._lease is not None:
                    await self._lease.refresh()
                    last_refresh = time.monotonic()
                if self.snapshot() != self._published:
                    await self._publish()
            except LeaseExpired:
                logger.warning("instance lease expired; registering again")
                self._lease = None
                with contextlib.suppress(StoreUnavailable):
                    await self._publish()
            except StoreUnavailable as exc:
                logger.warning("could not publish the instance record: %s", exc)
            await asyncio.sleep(self.min_interval_s)

    async def stop(self) -> None:
        """Remove the record at once (revoking the lease deletes it)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._lease.revoke()
