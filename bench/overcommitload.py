"""Load client of the over-commit benchmark: a fixed Zipf trace, closed loop, several routers.

Run by bench/overcommit.py as its own process. The trace is `meshload.zipf_sequence` over
`--models-file` (seeded, so every mode of one run replays the same requests in the same
order). `-c` workers take the next request of the trace as soon as their last one answered;
worker i always talks to target i mod len(targets), as clients behind a Service would.
Every request has a 60 s deadline; latency is the call's own time. Prints one JSON line.
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


async def drive(a: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    trace = zipf_sequence(len(models), a.alpha, a.requests, a.seed)
    payloads = {i: request_bytes("small", models[i]) for i in set(trace)}
    targets = a.targets.split(",")
    channels = [grpc.aio.insecure_channel(t, options=OPTIONS) for t in targets]
    calls = [
        ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        for ch in channels
    ]
    todo = iter(trace)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    samples: list[str] = []

    async def worker(n: int) -> None:
        call = calls[n % len(calls)]
        for index in todo:
            t0 = time.perf_counter()
            try:
                await call(payloads[index], timeout=DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                if len(samples) < MAX_SAMPLES:
                    samples.append(f"{exc.code().name}: {exc.details()}")
                continue
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(a.concurrency)))
    wall = time.perf_counter() - t0
    for ch in channels:
        await ch.close()
    lat.sort()
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
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", required=True, help="comma-separated host:port")
    ap.add_argument("--models-file", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    a = ap.parse_args()
    models = [m for m in a.models_file.read_text().split() if m]
    print(json.dumps(asyncio.run(drive(a, models))), flush=True)


if __name__ == "__main__":
    main()
