"""I/O: leader election among operator replicas, on an etcd key bound to a lease.

The leader holds `<root_prefix>/mm-operator/leader` (value: its identity) under a lease of
`LEASE_TTL_S`, refreshed every `RENEW_S`; the others try to create the key every `RETRY_S`
(reference: modelmesh-features.md §3.1, lease 15 s / retry 2 s). A killed leader's key
expires with its lease, so another replica takes over within about `LEASE_TTL_S`. A leader
that cannot refresh its lease for `LEASE_TTL_S - RENEW_S` steps down before it could expire,
so two replicas never both act. `on_gain` runs each time this replica becomes the leader
after startup (the handlers skipped what arrived meanwhile); a graceful stop revokes the
lease so a successor need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from mmesh.core.errors import LeaseExpired, StoreUnavailable
from mmesh.core.kv import KVStore, Lease

logger = logging.getLogger(__name__)

LEASE_TTL_S = 15
RENEW_S = 5.0
RETRY_S = 2.0
KEY_SUFFIX = "mm-operator/leader"


def leader_key(root_prefix: str) -> str:
    return f"{root_prefix.rstrip('/')}/{KEY_SUFFIX}"


def default_identity(pod_name: str = "") -> str:
    """The pod's name (stays the same when the container restarts in its pod), else host-pid."""
    return pod_name or f"{socket.gethostname()}-{os.getpid()}"


class Leadership:
    """Whether this replica leads; `run()` keeps campaigning / renewing until cancelled."""

    def __init__(
        self,
        kv: KVStore,
        key: str,
        identity: str,
        *,
        ttl_s: int = LEASE_TTL_S,
        renew_s: float = RENEW_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.kv = kv
        self.key = key
        self.identity = identity
        self.ttl_s, self.renew_s, self.retry_s = ttl_s, renew_s, retry_s
        self.on_gain: Callable[[], Awaitable[None]] | None = None
        self._lease: Lease | None = None
        self._renewed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self._lease is not None

    async def try_acquire(self) -> bool:
        """One attempt to become the leader; False if another replica is (or etcd is down)."""
        try:
            lease = await self.kv.grant_lease(self.ttl_s)
        except StoreUnavailable as exc:
            logger.debug("leader election: etcd unavailable (%s)", exc)
            return False
        try:
            won = await self.kv.put_if(
                self.key, self.identity.encode(), mod_revision=0, lease=lease
            ) or await self._take_over_own_key(lease)
        except StoreUnavailable:
            won = False
        if not won:
            with contextlib.suppress(StoreUnavailable):
                await lease.revoke()
            return False
        self._lease, self._renewed_at = lease, time.monotonic()
        logger.info("leader election: %s is the leader (%s)", self.identity, self.key)
        return True

    async def _take_over_own_key(self, lease: Lease) -> bool:
        """The key names this identity but this process holds no lease: an earlier run of
        the same pod died (a container restart) and its lease has not expired yet. Nobody
        else leads, so take the key now instead of waiting out the lease."""
        found = await self.kv.get(self.key)
        if found is None or found.value != self.identity.encode():
            return False
        taken = await self.kv.put_if(
            self.key, self.identity.encode(), mod_revision=found.mod_revision, lease=lease
        )
        if taken:
            logger.info("leader election: %s takes over from its previous run", self.identity)
        return taken

    async def run(self) -> None:
        """Campaign while following, renew while leading; until cancelled."""
        while True:
            if self._lease is None:
                await asyncio.sleep(self.retry_s)
                if await self.try_acquire() and self.on_gain is not None:
                    await self.on_gain()
                continue
            await asyncio.sleep(self.renew_s)
            await self._renew(self._lease)

    async def _renew(self, lease: Lease) -> None:
        try:
            await lease.refresh()
            self._renewed_at = time.monotonic()
            return
        except LeaseExpired:
            self._step_down("the lease expired")
            return
        except StoreUnavailable as exc:
            logger.warning("leader election: cannot renew the lease (%s)", exc)
        if time.monotonic() - self._renewed_at > self.ttl_s - self.renew_s:
            self._step_down("the lease could not be renewed in time")

    def _step_down(self, why: str) -> None:
        self._lease = None
        logger.warning("leader election: %s is no longer the leader: %s", self.identity, why)

    async def release(self) -> None:
        """Give the leadership up now (graceful stop)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(StoreUnavailable):
                await lease.revoke()
