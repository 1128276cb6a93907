"""How long a registry resync holds the router's event loop: the read of every record after
the watch broke (an etcd outage, or a watch that fell behind compaction).

    .venv/bin/python bench/resync.py                # 20,000 records, 3 rounds, about 40 s
    .venv/bin/python bench/resync.py --models 5000

Writes N model records into a fresh etcd, starts `mmesh.router.registry.Registry` on them
(its start-up sync), then runs the resync as the router runs it while serving (paced by
`mmesh.router.pacing.Pacer`) and unpaced, in turn. A task that wakes every millisecond
records the longest time the loop did not get back to it. Like the router's janitor, the
collector's generations are frozen before each round. Prints a table; writes
bench/results-resync.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path
from typing import Any

from harness import BENCH, environment, log, run_main, stop_on_signals, write_results
from mesh import SERVICE, connect, running_mesh, seed_async

from mmesh.core.records import KeyLayout
from mmesh.router.pacing import Pacer
from mmesh.router.registry import Registry

TICK_S = 0.001


async def longest_stall(work: Any) -> tuple[float, float]:
    """(wall s of `work`, the longest s the loop kept a 1 ms ticker waiting past its time)."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            due = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            worst = max(worst, time.perf_counter() - due)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await work
    wall = time.perf_counter() - started
    done = True
    await task
    return wall, worst


async def measure(mesh: Any, models: int, rounds: int) -> list[dict[str, Any]]:
    kv = await connect(mesh)
    prefix = mesh.prefix("resync")
    try:
        await seed_async(kv, prefix, [f"rs-{i:06d}" for i in range(models)], 64)
        registry = Registry(kv, KeyLayout(prefix, SERVICE))
        wall, stall = await longest_stall(registry.start())
        rows = [{"sync": "start-up", "round": 0, "wall_ms": wall * 1000, "stall_ms": stall * 1000}]
        log(f"  start-up sync of {len(registry.models.items)} records: {wall * 1000:.0f} ms")
        try:
            for n in range(1, rounds + 1):
                for paced in (True, False):
                    gc.collect()
                    gc.freeze()
                    pacer = Pacer() if paced else None
                    wall, stall = await longest_stall(registry._sync(pacer=pacer))
                    kind = "resync, paced" if paced else "resync, unpaced"
                    rows.append(
                        {"sync": kind, "round": n, "wall_ms": wall * 1000, "stall_ms": stall * 1000}
                    )
                    log(f"  {kind} {n}: wall {wall * 1000:.0f} ms, stall {stall * 1000:.1f} ms")
        finally:
            await registry.stop()
    finally:
        await kv.close()
    return rows


def report(rows: list[dict[str, Any]], models: int) -> None:
    print(f"\nregistry sync of {models} model records (the loop's longest stall, 1 ms ticker)")
    print(f"{'sync':18} {'round':>5} {'wall ms':>9} {'stall ms':>9}")
    for r in rows:
        print(f"{r['sync']:18} {r['round']:>5} {r['wall_ms']:>9.0f} {r['stall_ms']:>9.1f}")
    paced = [r["stall_ms"] for r in rows if r["sync"] == "resync, paced"]
    unpaced = [r["stall_ms"] for r in rows if r["sync"] == "resync, unpaced"]
    if paced and unpaced:
        ratio = max(paced) / max(unpaced)
        print(f"worst stall paced / unpaced: {max(paced):.1f} / {max(unpaced):.1f} = {ratio:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=BENCH / "results-resync.json")
    args = ap.parse_args()
    stop_on_signals()
    with running_mesh() as mesh:
        rows = asyncio.run(measure(mesh, args.models, args.rounds))
    results = {
        "environment": environment(None, phases=["resync"]),
        "models": args.models,
        "rows": rows,
    }
    write_results(results, args.out)
    report(rows, args.models)
    return 0


if __name__ == "__main__":
    run_main(main)
