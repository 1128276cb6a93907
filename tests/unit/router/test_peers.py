"""The peer pool counts the calls this router has in flight to each instance: placement
sends the next request to the holder with the fewest."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mmesh.router.forwarding import Forwarder, Metadata
from mmesh.router.peers import HOP_HEADER, Hop, PeerPool, hop_count, hop_metadata, hop_of


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


# --- the hop header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "extra", "wants_load", "wants_extra"),
    [(False, False, False, False), (True, False, True, False), (True, True, True, True)],
)
def test_the_hop_header_carries_the_count_the_load_and_the_destination(
    load: bool, extra: bool, wants_load: bool, wants_extra: bool
) -> None:
    metadata = hop_metadata(hops=0, dest="pod;a-1", load=load, exclude=(), extra=extra)
    assert [name for name, _ in metadata] == [HOP_HEADER]  # one header, no model id
    hop = hop_of(dict(metadata))
    assert (hop.hops, hop.dest) == (1, "pod;a-1")  # the destination may hold the separator
    assert (hop.wants_load, hop.wants_extra) == (wants_load, wants_extra)


def test_the_model_id_and_exclusions_travel_only_when_given() -> None:
    metadata = dict(hop_metadata(hops=0, dest="b", load=False, exclude={"z", "c"}, model_id="m"))
    assert metadata == {HOP_HEADER: "1;false;b", "mm-model-id": "m", "mm-exclude": "c,z"}
    non_ascii = dict(hop_metadata(hops=0, dest="b", load=False, exclude=(), model_id="módel"))
    assert non_ascii["mm-model-id-bin"] == "módel".encode()


@pytest.mark.parametrize("raw", [None, "", "x;true;b", "-1;true;b", "²;true;b"])
def test_a_request_without_a_valid_hop_header_is_a_clients_own(raw: str | None) -> None:
    hop = hop_of({} if raw is None else {HOP_HEADER: raw})
    assert hop.hops == 0 and hop_count({} if raw is None else {HOP_HEADER: raw}) == 0


def test_a_binary_hop_value_is_read_as_text() -> None:
    assert hop_of({HOP_HEADER: b"2;extra;b"}) == Hop(2, "extra", "b")
