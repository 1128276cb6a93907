"""Load client for the mesh benchmark: many models, closed or open loop, raw bytes.

Run by bench/mesh.py as its own process (so it never shares a GIL with the orchestrator
or a server). Sends serialized small V2 `ModelInferRequest`s (64 x FP32, as
bench/loadgen.py) to /inference.GRPCInferenceService/ModelInfer over one grpc.aio channel.
The model of each request is drawn from `--models-file` (one id per line):

- `--pick uniform`: uniformly at random (seeded);
- `--pick zipf`: Zipf(`--alpha`) over the list, rank -> model mapping shuffled (seeded),
  as bench-ref's eviction_sim.zipf_trace does; the sequence is fixed by `--seed`, so two
  targets get the same requests in the same order.

Closed loop (`--mode closed`): `-c` coroutines, each sends its next request when the last
answered; latency is the call's own time.

Open loop (`--mode open`): requests are due at a fixed `--rate` (evenly spaced) whatever
the answers do. Latency is measured from when a request was *due*, not when it was sent,
so a stalled client or server shows up in the percentiles (no coordinated omission); the
time from due to actually sent is reported too (`send_lag_*`).

Reads the CPU time of the `--watch` pids from /proc at the start and end of the measured
window. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from loadgen import METHOD, OPTIONS, pct, request_bytes
from procs import proc_cpu_seconds

MAX_ERRORS_KEPT = 5


def zipf_sequence(n_models: int, alpha: float, length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** alpha for i in range(n_models)]
    ids = list(range(n_models))
    rng.shuffle(ids)  # popularity rank -> index in the list
    return [ids[k] for k in rng.choices(range(n_models), weights=weights, k=length)]


def uniform_sequence(n_models: int, length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(n_models) for _ in range(length)]


@dataclass
class Window:
    pids: list[int]
    lat: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    measuring: bool = False
    t0: float = 0.0
    t1: float = 0.0
    cpu0: dict[int, float] = field(default_factory=dict)
    cpu1: dict[int, float] = field(default_factory=dict)

    def begin(self) -> None:
        self.cpu0 = {p: proc_cpu_seconds(p) for p in self.pids}
        self.t0 = time.perf_counter()
        self.measuring = True

    def end(self) -> None:
        self.measuring = False
        self.t1 = time.perf_counter()
        self.cpu1 = {p: proc_cpu_seconds(p) for p in self.pids}

    def error(self, exc: grpc.aio.AioRpcError) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERRORS_KEPT:
            self.error_samples.append(f"{exc.code().name}: {exc.details()}")


async def closed_worker(
    call: Any, payloads: list[bytes], seq: list[int], start: int, win: Window, stop: list[bool]
) -> None:
    i = start
    while not stop[0]:
        payload = payloads[seq[i % len(seq)]]
        i += 1
        t0 = time.perf_counter()
        try:
            await call(payload, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if win.measuring:
                win.error(exc)
            continue
        if win.measuring:
            win.lat.append(time.perf_counter() - t0)


async def closed_loop(a: argparse.Namespace, call: Any, payloads: list[bytes], win: Window) -> None:
    seq = make_sequence(a, len(payloads), 200_000)
    stop = [False]
    stride = len(seq) // max(1, a.concurrency)
    tasks = [
        asyncio.create_task(closed_worker(call, payloads, seq, k * stride, win, stop))
        for k in range(a.concurrency)
    ]
    await asyncio.sleep(a.warmup)
    win.begin()
    await asyncio.sleep(a.duration)
    win.end()
    stop[0] = True
    await asyncio.gather(*tasks)


async def open_one(call: Any, payload: bytes, due: float, win: Window, measured: bool) -> None:
    sent = time.perf_counter()
    try:
        await call(payload, timeout=30)
    except grpc.aio.AioRpcError as exc:
        if measured:
            win.error(exc)
        return
    done = time.perf_counter()
    if measured:
        win.lat.append(done - due)
        win.service.append(done - sent)
        win.lag.append(sent - due)


async def open_loop(a: argparse.Namespace, call: Any, payloads: list[bytes], win: Window) -> None:
    total = int((a.warmup + a.duration) * a.rate)
    warm = int(a.warmup * a.rate)
    seq = make_sequence(a, len(payloads), total)
    interval = 1.0 / a.rate
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i * interval <= now:
            if i == warm:
                win.begin()
            due = start + i * interval
            task = asyncio.create_task(open_one(call, payloads[seq[i]], due, win, i >= warm))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
    if pending:
        await asyncio.wait(pending, timeout=35)
    win.end()


def make_sequence(a: argparse.Namespace, n_models: int, length: int) -> list[int]:
    if a.pick == "zipf":
        return zipf_sequence(n_models, a.alpha, length, a.seed)
    return uniform_sequence(n_models, length, a.seed)


async def drive(a: argparse.Namespace, models: list[str]) -> Window:
    payloads = [request_bytes("small", m) for m in models]
    win = Window(pids=[int(p) for p in a.watch.split(",") if p])
    async with grpc.aio.insecure_channel(a.target, options=OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        if a.mode == "open":
            await open_loop(a, call, payloads, win)
        else:
            await closed_loop(a, call, payloads, win)
    return win


def ms(xs: list[float], p: float) -> float | None:
    return round(pct(xs, p) * 1e3, 4) if xs else None


def summary(a: argparse.Namespace, win: Window, n_models: int) -> dict[str, Any]:
    elapsed = max(1e-9, win.t1 - win.t0)
    n = len(win.lat)
    cpu = {str(p): win.cpu1[p] - win.cpu0[p] for p in win.pids}
    out: dict[str, Any] = {
        "label": a.label,
        "target": a.target,
        "mode": a.mode,
        "pick": a.pick,
        "models": n_models,
        "c": a.concurrency if a.mode == "closed" else None,
        "rate": a.rate if a.mode == "open" else None,
        "n": n,
        "errors": win.errors,
        "error_samples": win.error_samples,
        "elapsed_s": round(elapsed, 3),
        "rps": round(n / elapsed, 1),
        "p50_ms": ms(win.lat, 50),
        "p90_ms": ms(win.lat, 90),
        "p99_ms": ms(win.lat, 99),
        "p999_ms": ms(win.lat, 99.9),
        "max_ms": round(max(win.lat) * 1e3, 3) if n else None,
        "mean_ms": round(statistics.fmean(win.lat) * 1e3, 4) if n else None,
        "cpu_s": {p: round(v, 4) for p, v in cpu.items()},
        "cpu_us_per_req": {p: round(v / n * 1e6, 1) if n else None for p, v in cpu.items()},
    }
    if a.mode == "open":
        out["service_p50_ms"] = ms(win.service, 50)
        out["service_p99_ms"] = ms(win.service, 99)
        out["send_lag_p50_ms"] = ms(win.lag, 50)
        out["send_lag_p99_ms"] = ms(win.lag, 99)
        out["send_lag_max_ms"] = round(max(win.lag) * 1e3, 3) if win.lag else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--models-file", required=True)
    ap.add_argument("--mode", choices=("closed", "open"), default="closed")
    ap.add_argument("--pick", choices=("uniform", "zipf"), default="uniform")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--rate", type=float, default=1000.0, help="open loop: requests per second")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--watch", default="", help="comma-separated pids to read CPU time of")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    models = [m for m in Path(a.models_file).read_text().splitlines() if m]
    win = asyncio.run(drive(a, models))
    print(json.dumps(summary(a, win, len(models))), flush=True)


if __name__ == "__main__":
    main()
