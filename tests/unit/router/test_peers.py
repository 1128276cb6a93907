"""The peer pool counts the calls this router has in flight to each instance: placement
sends the next request to the holder with the fewest."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mmesh.router.forwarding import Forwarder, Metadata
from mmesh.router.peers import PeerPool


class HeldPeer:
    """A peer whose calls wait until released, or fail."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail = False

    async def call(
        self, method: str, payload: bytes, metadata: Metadata, timeout_s: float | None
    ) -> bytes:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("peer went away")
        return payload


def pool_with(peer: HeldPeer) -> PeerPool:
    pool = PeerPool(max_message_bytes=1024)
    pool.get = lambda endpoint: cast(Forwarder, peer)  # type: ignore[method-assign]
    return pool


async def test_a_call_counts_in_flight_to_its_instance_until_it_returns() -> None:
    peer = HeldPeer()
    pool = pool_with(peer)
    calls = [
        asyncio.create_task(pool.call("b", "127.0.0.1:1", "/m", b"x", (), None)) for _ in range(2)
    ]
    await asyncio.sleep(0)
    assert dict(pool.inflight) == {"b": 2}
    peer.release.set()
    assert await asyncio.gather(*calls) == [b"x", b"x"]
    assert dict(pool.inflight) == {"b": 0}


async def test_a_failed_call_leaves_the_count() -> None:
    peer = HeldPeer()
    peer.fail = True
    peer.release.set()
    pool = pool_with(peer)
    with pytest.raises(ConnectionError):
        await pool.call("b", "127.0.0.1:1", "/m", b"x", (), None)
    assert dict(pool.inflight) == {"b": 0}
