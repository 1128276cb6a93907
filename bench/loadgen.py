"""Closed-loop gRPC load client: N grpc.aio coroutines on one channel, raw bytes.

Run by bench/run.py as its own process (so it never shares a GIL with the orchestrator).
Sends serialized V2 `ModelInferRequest`s ("small": 64 x FP32, "large": 262,144 x FP32 =
1 MiB, as bench-ref does) to /inference.GRPCInferenceService/ModelInfer, warms up, then
measures for `--duration` seconds or until `--requests` measured answers. It reads the
CPU time of the `--watch` pids from /proc at the start and end of the measured window.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from procs import proc_cpu_seconds

from mmesh.core.proto import grpc_predict_v2_pb2 as v2

METHOD = "/inference.GRPCInferenceService/ModelInfer"
MAX_MSG = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
]


def request_bytes(kind: str, model: str) -> bytes:
    n = 64 if kind == "small" else 262_144
    req = v2.ModelInferRequest(model_name=model, id="req-1")
    tensor = req.inputs.add()
    tensor.name = "predict"
    tensor.datatype = "FP32"
    tensor.shape.extend([1, n])
    req.raw_input_contents.append(os.urandom(4 * n))
    return req.SerializeToString()


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (bench-ref's client.py definition)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class Run:
    want: int
    pids: list[int]
    measuring: bool = False
    stop: bool = False
    lat: list[float] = field(default_factory=list)
    total: int = 0
    errors: int = 0
    first_error: str = ""
    t0: float = 0.0
    t1: float = 0.0
    cpu0: dict[int, float] = field(default_factory=dict)
    cpu1: dict[int, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        self.cpu0 = {p: proc_cpu_seconds(p) for p in self.pids}
        self.t0 = time.perf_counter()
        self.measuring = True

    def end(self) -> None:
        if not self.measuring:
            return
        self.measuring = False
        self.t1 = time.perf_counter()
        self.cpu1 = {p: proc_cpu_seconds(p) for p in self.pids}
        self.done.set()

    def record(self, seconds: float) -> None:
        self.total += 1
        if self.measuring:
            self.lat.append(seconds)
            if self.want and len(self.lat) >= self.want:
                self.end()


async def worker(call: Any, payload: bytes, run: Run) -> None:
    while not run.stop:
        t0 = time.perf_counter()
        try:
            await call(payload, timeout=30)
        except grpc.aio.AioRpcError as exc:
            run.errors += 1
            run.first_error = run.first_error or f"{exc.code().name}: {exc.details()}"
            if run.errors > 100:
                run.stop = True
                run.end()
            continue
        run.record(time.perf_counter() - t0)


async def drive(a: argparse.Namespace) -> Run:
    payload = request_bytes(a.payload, a.model)
    run = Run(want=a.requests, pids=[int(p) for p in a.watch.split(",") if p])
    async with grpc.aio.insecure_channel(a.target, options=OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        call = channel.unary_unary(METHOD)
        tasks = [asyncio.create_task(worker(call, payload, run)) for _ in range(a.concurrency)]
        await asyncio.sleep(a.warmup)
        run.begin()
        limit = a.duration if not a.requests else a.max_duration
        try:
            await asyncio.wait_for(run.done.wait(), timeout=limit)
        except TimeoutError:
            run.end()
        run.stop = True
        await asyncio.gather(*tasks)
    return run


def summary(a: argparse.Namespace, run: Run) -> dict[str, Any]:
    elapsed = max(1e-9, run.t1 - run.t0)
    n = len(run.lat)
    cpu = {str(p): run.cpu1[p] - run.cpu0[p] for p in run.pids}
    return {
        "label": a.label,
        "target": a.target,
        "payload": a.payload,
        "c": a.concurrency,
        "n": n,
        "total": run.total,
        "errors": run.errors,
        "first_error": run.first_error,
        "elapsed_s": round(elapsed, 3),
        "rps": round(n / elapsed, 1),
        "p50_ms": round(pct(run.lat, 50) * 1e3, 4) if n else None,
        "p99_ms": round(pct(run.lat, 99) * 1e3, 4) if n else None,
        "mean_ms": round(statistics.fmean(run.lat) * 1e3, 4) if n else None,
        "cpu_s": {p: round(v, 4) for p, v in cpu.items()},
        "cpu_us_per_req": {p: round(v / n * 1e6, 1) if n else None for p, v in cpu.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--payload", choices=("small", "large"), default="small")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=0, help="measure this many answers instead")
    ap.add_argument("--max-duration", type=float, default=60.0)
    ap.add_argument("--watch", default="", help="comma-separated pids to read CPU time of")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    run = asyncio.run(drive(a))
    print(json.dumps(summary(a, run)), flush=True)


if __name__ == "__main__":
    main()
