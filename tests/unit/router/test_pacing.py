"""The pacer: long registry passes take a bounded share of the event loop."""

from __future__ import annotations

import asyncio

import pytest

from mmesh.router.pacing import Pacer


class FakeTime:
    """A clock the pass advances by hand; sleeping advances it too and is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.rests: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds


def pacer(t: FakeTime, *, slice_s: float = 0.001, share: float = 0.1) -> Pacer:
    return Pacer(slice_s=slice_s, share=share, clock=t.clock, sleep=t.sleep)


async def run_pass(p: Pacer, t: FakeTime, items: int, cost_s: float) -> float:
    """`items` pieces of work of `cost_s` each; the pass's wall time."""
    began = t.now
    for _ in range(items):
        t.now += cost_s
        await p.step()
    return t.now - began


def test_a_short_pass_never_rests() -> None:
    t = FakeTime()
    wall = asyncio.run(run_pass(pacer(t), t, items=90, cost_s=0.00001))  # 0.9 ms of work
    assert t.rests == []
    assert wall == pytest.approx(0.0009)


def test_a_long_pass_uses_at_most_its_share_of_the_loop() -> None:
    t = FakeTime()
    p = pacer(t, share=0.1)
    wall = asyncio.run(run_pass(p, t, items=20_000, cost_s=0.000004))  # 80 ms of work
    assert 0.080 / wall == pytest.approx(0.1, rel=0.02)
    assert p.rested_s == pytest.approx(sum(t.rests))
    assert len(t.rests) == pytest.approx(80, abs=2)  # one rest per 1 ms slice


def test_no_slice_runs_much_past_its_length() -> None:
    t = FakeTime()
    p = pacer(t, slice_s=0.001)
    worked_since_rest, longest = 0.0, 0.0

    async def go() -> None:
        nonlocal worked_since_rest, longest
        for _ in range(5_000):
            t.now += 0.00003
            worked_since_rest += 0.00003
            rests = len(t.rests)
            await p.step()
            if len(t.rests) > rests:
                longest, worked_since_rest = max(longest, worked_since_rest), 0.0

    asyncio.run(go())
    assert 0.001 <= longest < 0.001 + 0.00003 + 1e-9


def test_time_spent_waiting_on_something_else_is_not_counted_as_work() -> None:
    t = FakeTime()
    p = pacer(t)

    async def go() -> None:
        for _ in range(10):
            t.now += 0.005  # an etcd write the pass awaited: the loop had its turn
            p.resume()
            t.now += 0.0002
            await p.step()
        for _ in range(5):
            t.now += 0.0002
            await p.step()

    asyncio.run(go())
    assert t.rests == [pytest.approx(0.009)]  # after 1 ms of its own work in a row


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share must be in"):
        Pacer(share=share)


def test_the_full_share_never_rests_longer_than_nothing() -> None:
    t = FakeTime()
    asyncio.run(run_pass(pacer(t, share=1.0), t, items=1_000, cost_s=0.0001))
    assert t.rests and all(r == 0 for r in t.rests)
