"""Load client of the over-commit benchmark: a fixed Zipf trace, several routers, closed or
open loop.

Run by bench/overcommit.py as its own process. The trace is `meshload.zipf_sequence` over
`--models-file` (seeded, so every mode of one run replays the same requests in the same
order). Closed loop (default): `-c` workers take the next request of the trace as soon as
their last one answered; worker i always talks to target i mod len(targets), as clients
behind a Service would; latency is the call's own time. Open loop (`--rate R`): request n is
due at n / R seconds and sent then, to target n mod len(targets), whatever is still in
flight; its latency counts from when it was due, so a client that falls behind is not hidden
(no coordinated omission). Every request has a 60 s deadline. Prints one JSON line; besides
the percentiles of all requests, `p99_warm_ms` leaves out the first tenth of the trace, while
the empty cache fills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from loadgen import METHOD, OPTIONS, pct, request_bytes
from meshload import zipf_sequence

DEADLINE_S = 60.0
MAX_SAMPLES = 5
WARM_UP = 0.1
"""The share of the trace counted as the cache's warm-up in `p99_warm_ms`."""


class Client:
    """The trace's requests, the routers' call objects and what came back."""

    def __init__(self, a: argparse.Namespace, models: list[str]) -> None:
        self.trace = zipf_sequence(len(models), a.alpha, a.requests, a.seed)
        self.payloads = {i: request_bytes("small", models[i]) for i in set(self.trace)}
        targets = a.targets.split(",")
        self.channels = [grpc.aio.insecure_channel(t, options=OPTIONS) for t in targets]
        self.calls = [
            ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            for ch in self.channels
        ]
        self.lat: list[float] = []
        self.warm: list[float] = []
        """Latencies of the requests after the first WARM_UP of the trace (cache filling)."""
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []

    async def send(self, n: int, index: int, since: float, target: int | None = None) -> None:
        """Request n of the trace (for model `index`) to `target` (default: n) mod targets;
        latency counts from `since`."""
        call = self.calls[(n if target is None else target) % len(self.calls)]
        try:
            await call(self.payloads[index], timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(f"{exc.code().name}: {exc.details()}")
            return
        latency = time.perf_counter() - since
        self.lat.append(latency)
        if n >= len(self.trace) * WARM_UP:
            self.warm.append(latency)

    async def closed_loop(self, concurrency: int) -> None:
        todo = iter(enumerate(self.trace))

        async def worker(w: int) -> None:
            for n, index in todo:
                await self.send(n, index, time.perf_counter(), target=w)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))

    async def open_loop(self, rate: float) -> None:
        start, sent = time.perf_counter(), []
        for n, index in enumerate(self.trace):
            due = start + n / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            sent.append(asyncio.create_task(self.send(n, index, due)))
        await asyncio.gather(*sent)


async def drive(a: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    client = Client(a, models)
    t0 = time.perf_counter()
    if a.rate > 0:
        await client.open_loop(a.rate)
    else:
        await client.closed_loop(a.concurrency)
    wall = time.perf_counter() - t0
    for ch in client.channels:
        await ch.close()
    trace, lat, errors, samples = client.trace, client.lat, client.errors, client.samples
    lat.sort()
    warm = sorted(client.warm)
    return {
        "requests": len(trace),
        "answered": len(lat),
        "failed": sum(errors.values()),
        "errors_by_code": dict(errors),
        "error_samples": samples,
        "wall_s": round(wall, 2),
        "rps": round(len(lat) / wall, 2) if wall else None,
        "p50_ms": round(pct(lat, 50) * 1000, 2) if lat else None,
        "p90_ms": round(pct(lat, 90) * 1000, 2) if lat else None,
        "p99_ms": round(pct(lat, 99) * 1000, 2) if lat else None,
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "p99_warm_ms": round(pct(warm, 99) * 1000, 2) if warm else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", required=True, help="comma-separated host:port")
    ap.add_argument("--models-file", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0.0, help="open loop, requests/s (0: closed)")
    a = ap.parse_args()
    models = [m for m in a.models_file.read_text().split() if m]
    print(json.dumps(asyncio.run(drive(a, models))), flush=True)


if __name__ == "__main__":
    main()
