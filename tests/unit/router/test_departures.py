"""A call to a peer ends as soon as the registry says the peer went away, and only then."""

from __future__ import annotations

import asyncio

import pytest

from mmesh.core.records import Table
from mmesh.router.errors import RuntimeUnavailable
from mmesh.router.peers import Departures

STARTED = 1_000


class Peers:
    """Start times of the live peers, as the registry mirror has them."""

    def __init__(self) -> None:
        self.start_times: dict[str, int] = {"b": STARTED}

    def __call__(self, instance_id: str) -> int | None:
        return self.start_times.get(instance_id)


async def call_then(departures: Departures, change: object) -> asyncio.Task[str]:
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(departures.watched("b", STARTED, answer))
    await asyncio.sleep(0)  # the call is in flight
    assert callable(change)
    change()
    await asyncio.sleep(0)
    if not answer.done():
        answer.set_result("answer")
    return task


@pytest.mark.parametrize(
    ("gone", "why"),
    [(True, "its instance record is gone"), (False, "it restarted")],
)
async def test_a_call_ends_when_its_peer_goes(gone: bool, why: str) -> None:
    peers = Peers()
    departures = Departures(peers)

    def change() -> None:
        if gone:
            del peers.start_times["b"]
        else:
            peers.start_times["b"] = STARTED + 5
        departures.peer_changed(Table.INSTANCES, "b")

    task = await call_then(departures, change)
    with pytest.raises(RuntimeUnavailable, match=f"peer b went away during the call: {why}"):
        await task
    assert not task.cancelling()


async def test_other_changes_leave_the_call_alone() -> None:
    peers = Peers()
    departures = Departures(peers)

    def change() -> None:
        departures.peer_changed(Table.INSTANCES, "b")  # same start time: a refresh
        departures.peer_changed(Table.INSTANCES, "c")
        departures.peer_changed(Table.REGISTRY, "b")

    assert await (await call_then(departures, change)) == "answer"


async def test_the_callers_own_cancellation_is_not_a_departure() -> None:
    departures = Departures(Peers())
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(departures.watched("b", STARTED, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
