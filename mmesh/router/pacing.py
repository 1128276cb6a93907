"""Long passes over the registry take a bounded share of the event loop.

The leader's survey, the healer's reconcile and the reaper walk every record: 20K records
are 40-80 ms of Python. Yielding with `sleep(0)` between chunks is not enough: the pass still
takes about half of the loop while it runs, and a router that is already busy with requests
falls behind for the pass's whole length (G10 measured 150 ms answers every 15 s). A `Pacer`
lets the pass work for a short slice, then rests long enough that the pass uses at most
`share` of the loop's time. The pass takes about ten times longer; a request waits at most
one slice behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

SLICE_S = 0.001
"""Work done between two rests: the most a request can wait behind the pass."""
SHARE = 0.1
"""The part of the loop's time a pass may use while it runs."""


class Pacer:
    """Call `step()` after each piece of a long pass; it rests when a slice is used up."""

    __slots__ = ("_clock", "_rest_per_s", "_sleep", "_slice_began", "rested_s", "slice_s")

    def __init__(
        self,
        *,
        slice_s: float = SLICE_S,
        share: float = SHARE,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        if slice_s <= 0:
            raise ValueError(f"slice_s must be positive, not {slice_s}")
        self.slice_s = slice_s
        self._rest_per_s = (1 - share) / share
        self._clock, self._sleep = clock, sleep
        self._slice_began = clock()
        self.rested_s = 0.0
        """Time spent resting so far (what the pacing cost the pass)."""

    async def step(self) -> None:
        worked = self._clock() - self._slice_began
        if worked < self.slice_s:
            return
        rest = worked * self._rest_per_s
        self.rested_s += rest
        await self._sleep(rest)
        self._slice_began = self._clock()

    def resume(self) -> None:
        """The pass has just awaited something else (an etcd write), so the loop had its
        turn: a new slice begins now, and the wait does not count as work."""
        self._slice_began = self._clock()
