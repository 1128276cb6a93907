"""I/O: the KV store port, and MemoryKV, its in-process implementation.

`KVStore` is what the router, operator and leader tasks use to reach etcd:
single-key reads and writes, compare-and-swap on a key's mod revision,
consistent paginated prefix reads, prefix watches from a revision, and
leases. `mmesh.core.etcd.EtcdKV` implements it against a real etcd;
`MemoryKV` implements the same semantics in memory (revisions, one revision
per write, lease expiry on an injectable clock, watch history) so higher
layers are unit-tested without a server. Both pass the same contract suite
(tests/integration/core/test_kv_contract.py). Keys are text, values bytes;
key layout and record schemas live in `mmesh.core.records`, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mmesh.core.errors import LeaseExpired, RevisionCompacted, StoreUnavailable

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (time.monotonic by default)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as the store holds it."""

    key: str
    value: bytes
    create_revision: int
    """Revision of the write that created the key (since its last deletion)."""
    mod_revision: int
    """Revision of the last write of the key: the token for `put_if`/`delete_if`."""
    version: int
    """Writes since the key was created (1 after creation)."""
    lease: int = 0
    """Id of the lease the key is bound to; 0 for none."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change under a watched prefix."""

    kind: Literal["PUT", "DELETE"]
    key: str
    value: bytes
    """The new value; b"" for DELETE."""
    mod_revision: int
    """Revision of the change (for DELETE: of the deletion)."""


class Lease(Protocol):
    """A lease: keys put with it are deleted when it expires or is revoked."""

    @property
    def id(self) -> int: ...

    @property
    def ttl(self) -> int:
        """Granted time to live in seconds (etcd may raise a small request)."""
        ...

    async def refresh(self) -> None:
        """Restart the ttl; raise LeaseExpired if the lease is already gone."""

    async def revoke(self) -> None:
        """End the lease now, deleting its keys; a lease already gone is fine."""


class KVStore(Protocol):
    """The operations mmesh needs from etcd. Failures raise StoreUnavailable."""

    async def get(self, key: str) -> KeyValue | None:
        """The key, or None if it does not exist."""

    async def range_prefix(
        self, prefix: str, *, page_size: int = 1000
    ) -> tuple[list[KeyValue], int]:
        """Every key starting with `prefix`, sorted, as of one revision (returned too).

        Read in pages of `page_size` keys, all at the revision of the first
        page, so the result is one consistent snapshot; watch from the
        returned revision + 1 to follow it.
        """
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Write the key (bound to `lease`, or to none); return the new revision."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete the key; False if it did not exist."""
        ...

    async def put_if(
        self, key: str, value: bytes, *, mod_revision: int, lease: Lease | None = None
    ) -> bool:
        """Write only if the key's mod revision is `mod_revision` (0: must not exist)."""
        ...

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        """Delete only if the key exists with mod revision `mod_revision` (> 0)."""
        ...

    def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Changes under `prefix` with revision >= `start_revision`, in order.

        Raises RevisionCompacted if that history is gone; ends when the store
        is closed. Close it early with `contextlib.aclosing`.
        """
        ...

    async def grant_lease(self, ttl_s: int) -> Lease:
        """A new lease that expires `ttl_s` seconds after its last refresh."""
        ...

    async def compact(self, revision: int) -> None:
        """Drop history older than `revision` (watches from before it fail)."""

    async def close(self) -> None:
        """Release the connection; running watches end."""


def check_mod_revision(mod_revision: int, *, allow_zero: bool) -> None:
    """Shared argument check for the conditional writes."""
    if mod_revision < 0 or (mod_revision == 0 and not allow_zero):
        lowest = 0 if allow_zero else 1
        raise ValueError(f"mod_revision must be >= {lowest}, got {mod_revision}")


# ---------------------------------------------------------------- MemoryKV


@dataclass(slots=True)
class _Entry:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def view(self, key: str) -> KeyValue:
        return KeyValue(
            key, self.value, self.create_revision, self.mod_revision, self.version, self.lease
        )


@dataclass(slots=True)
class _LeaseState:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


@dataclass(slots=True, eq=False)  # compared and hashed by identity: kept in a set
class _Watcher:
    prefix: str
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


class LeaseOwner(Protocol):
    """The store side of a lease: what `StoreLease` delegates to."""

    async def refresh_lease(self, lease_id: int) -> None: ...

    async def revoke_lease(self, lease_id: int) -> None: ...


class StoreLease:
    """A lease granted by a store (implements `Lease` for MemoryKV and EtcdKV alike)."""

    def __init__(self, store: LeaseOwner, lease_id: int, ttl: int) -> None:
        self._store = store
        self._id = lease_id
        self._ttl = ttl

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> int:
        return self._ttl

    async def refresh(self) -> None:
        await self._store.refresh_lease(self._id)

    async def revoke(self) -> None:
        await self._store.revoke_lease(self._id)

    def __repr__(self) -> str:
        return f"Lease(id={self._id:x}, ttl={self._ttl}, store={type(self._store).__name__})"


class MemoryKV:
    """An in-process KVStore with etcd's revision, watch and lease semantics.

    Every change takes the next revision (a lease expiry deleting several keys
    takes one revision for all of them, as in etcd). Leases expire when not
    refreshed within their ttl as measured by `clock`; expiry is applied
    before every operation and by a background reaper every
    `reap_interval_s`, or on demand with `expire_due()` (for fake clocks).
    History is kept for watches, compacting itself beyond `max_history`
    events. `set_available(False)` makes requests raise StoreUnavailable.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        reap_interval_s: float = 0.05,
        max_history: int = 100_000,
    ) -> None:
        self._clock = clock
        self._reap_interval_s = reap_interval_s
        self._max_history = max_history
        self._data: dict[str, _Entry] = {}
        self._revision = 1  # a fresh etcd cluster reports revision 1
        self._compacted = 0
        self._history: list[WatchEvent] = []
        self._watchers: set[_Watcher] = set()
        self._leases: dict[int, _LeaseState] = {}
        self._lease_ids = itertools.count(0x6D6D_0000_0001)
        self._reaper: asyncio.Task[None] | None = None
        self._available = True
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"MemoryKV(revision={self._revision}, keys={len(self._data)}, "
            f"leases={len(self._leases)}, watchers={len(self._watchers)})"
        )

    # ------------------------------------------------------------ test hooks

    @property
    def revision(self) -> int:
        """The current store revision."""
        return self._revision

    def set_available(self, available: bool) -> None:
        """Simulate losing (False) and regaining (True) the store."""
        self._available = available

    def expire_due(self) -> None:
        """Expire every lease whose deadline has passed on the clock."""
        now = self._clock()
        for lease_id in [i for i, s in self._leases.items() if s.deadline <= now]:
            self._end_lease(lease_id)

    # ------------------------------------------------------------ KVStore

    async def get(self, key: str) -> KeyValue | None:
        self._enter()
        entry = self._data.get(key)
        return None if entry is None else entry.view(key)

    async def range_prefix(
        self, prefix: str, *, page_size: int = 1000
    ) -> tuple[list[KeyValue], int]:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self._enter()
        # One synchronous pass is one revision: nothing can interleave.
        found = [e.view(k) for k, e in self._data.items() if k.startswith(prefix)]
        found.sort(key=lambda kv: kv.key.encode())
        return found, self._revision

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        self._enter()
        return self._write(key, value, lease)

    async def delete(self, key: str) -> bool:
        self._enter()
        if key not in self._data:
            return False
        self._revision += 1
        self._remove(key, self._revision)
        return True

    async def put_if(
        self, key: str, value: bytes, *, mod_revision: int, lease: Lease | None = None
    ) -> bool:
        check_mod_revision(mod_revision, allow_zero=True)
        self._enter()
        if self._mod_revision_of(key) != mod_revision:
            return False
        self._write(key, value, lease)
        return True

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        check_mod_revision(mod_revision, allow_zero=False)
        self._enter()
        if self._mod_revision_of(key) != mod_revision:
            return False
        self._revision += 1
        self._remove(key, self._revision)
        return True

    async def watch_prefix(
        self, prefix: str, *, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        if start_revision < 1:
            raise ValueError(f"start_revision must be >= 1, got {start_revision}")
        self._enter()
        if start_revision < self._compacted:
            raise RevisionCompacted(start_revision, self._compacted)
        watcher = _Watcher(prefix)
        # Replay and subscribe in one synchronous step so no event falls between.
        for event in self._history:
            if event.mod_revision >= start_revision and event.key.startswith(prefix):
                watcher.queue.put_nowait(event)
        self._watchers.add(watcher)
        try:
            while (item := await watcher.queue.get()) is not None:
                yield item
        finally:
            self._watchers.discard(watcher)

    async def grant_lease(self, ttl_s: int) -> Lease:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._enter()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _LeaseState(ttl_s, self._clock() + ttl_s)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        return StoreLease(self, lease_id, ttl_s)

    async def compact(self, revision: int) -> None:
        self._enter()
        if revision > self._revision:
            raise ValueError(f"cannot compact revision {revision}: store is at {self._revision}")
        self._compact(revision)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # we cancelled it just now
                await self._reaper

    # ------------------------------------------------------------ lease ops

    async def refresh_lease(self, lease_id: int) -> None:
        """Restart a lease's ttl (StoreLease.refresh)."""
        self._enter()
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseExpired(lease_id)
        state.deadline = self._clock() + state.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        """End a lease now (StoreLease.revoke); unknown ids are ignored."""
        self._enter()
        self._end_lease(lease_id)

    # ------------------------------------------------------------ internals

    def _enter(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory KV store is closed")
        if not self._available:
            raise StoreUnavailable("memory KV store is marked unavailable")
        self.expire_due()

    def _mod_revision_of(self, key: str) -> int:
        entry = self._data.get(key)
        return 0 if entry is None else entry.mod_revision

    def _write(self, key: str, value: bytes, lease: Lease | None) -> int:
        lease_id = 0 if lease is None else lease.id
        if lease_id and lease_id not in self._leases:
            raise LeaseExpired(lease_id)
        self._revision += 1
        old = self._data.get(key)
        if old is not None and old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        if lease_id:
            self._leases[lease_id].keys.add(key)
        create = self._revision if old is None else old.create_revision
        version = 1 if old is None else old.version + 1
        self._data[key] = _Entry(value, create, self._revision, version, lease_id)
        self._publish(WatchEvent("PUT", key, value, self._revision))
        return self._revision

    def _remove(self, key: str, revision: int) -> None:
        entry = self._data.pop(key)
        if entry.lease in self._leases:
            self._leases[entry.lease].keys.discard(key)
        self._publish(WatchEvent("DELETE", key, b"", revision))

    def _end_lease(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id, None)
        if state is None or not state.keys:
            return
        self._revision += 1  # like etcd: all of the lease's keys go in one revision
        for key in sorted(state.keys):
            self._remove(key, self._revision)

    def _publish(self, event: WatchEvent) -> None:
        self._history.append(event)
        if len(self._history) > self._max_history:
            self._compact(self._history[len(self._history) // 2].mod_revision)
        for watcher in self._watchers:
            if event.key.startswith(watcher.prefix):
                watcher.queue.put_nowait(event)

    def _compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        self._compacted = revision
        self._history = [e for e in self._history if e.mod_revision >= revision]

    async def _reap(self) -> None:
        while self._leases and not self._closed:
            await asyncio.sleep(self._reap_interval_s)
            self.expire_due()
