"""G6 eviction efficiency: the router's cache (`mmesh.router.cache.LocalCache`) replayed on
bench-ref's fixed Zipf traces, against bench-ref's own LRU and offline-Belady simulators.

    .venv/bin/python bench/g6_eviction.py        # prints one JSON object

The trace is the goal's: 2,000 models, Zipf alpha 1.0, 200K requests, seed 42, capacity
10 % of the total size, unit and lognormal sizes (`eviction_sim.zipf_trace` and its size
draw, seed 7). Every load and unload completes at once and the churn age is 0, so the
replay shows the eviction *policy* alone. `eviction_sim.py` runs its whole experiment
matrix at import, so only its imports and function definitions are executed here (as
tests/unit/router/test_cache_vs_simulator.py does).

G6a replays LocalCache in LRU mode (`MM_EVICTION_POLICY=lru`); G6b replays the default
value policy (`mmesh.router.eviction`, time constant VALUE_TAU requests; loads take time
proportional to size unless said otherwise). A third trace, "popularity shift", is the
same Zipf law whose rank -> model mapping is reshuffled halfway through (seed 43): G6b
asks the value policy to stay within 2 % of LRU's hit ratio there.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmesh.core.ids import ModelId
from mmesh.router.cache import EntryState, EvictionPolicy, LocalCache
from mmesh.router.eviction import Scoring

ROOT = Path(__file__).resolve().parent.parent
REF = Path(os.environ.get("MMBENCH_REF_DIR", ROOT.parent / "shared" / "bench-ref")).resolve()
N_MODELS = 2_000
N_REQUESTS = 200_000
ALPHA = 1.0
CAPACITY_FRACTION = 0.10
SEED = 42
HIT_TOLERANCE = 0.005
BELADY_STRETCH = 1.35
SHIFT_TOLERANCE = 0.02
VALUE_TAU = 10_000
"""The value policy's time constant in this replay, whose clock is the request index:
50 passes of the trace over the cache's 200 unit entries (the router's default, 60 s of
wall time, is the same at about 170 requests/s to one pod)."""
VALUE = Scoring(tau_ms=VALUE_TAU)


def load_simulator(path: Path = REF / "eviction_sim.py") -> dict[str, Any]:
    """The simulator's functions, without running its main()."""
    tree = ast.parse(path.read_text(), filename=str(path))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    namespace: dict[str, Any] = {"__name__": "eviction_sim"}
    exec(compile(tree, str(path), "exec"), namespace)
    return namespace


def sizes(kind: str, n: int = N_MODELS) -> list[int]:
    """The simulator's sizes: 1 each, or lognormal MB (median 50, sigma 1, seed 7)."""
    if kind == "unit":
        return [1] * n
    rng = random.Random(7)
    return [max(1, int(rng.lognormvariate(math.log(50), 1.0))) for _ in range(n)]


def replay_local_cache(
    trace: list[int],
    size: list[int],
    capacity: int,
    scoring: Scoring | None = None,
    load_ms: Callable[[int], float | None] = lambda units: None,
) -> tuple[int, int]:
    """(hits, units loaded) of LocalCache on `trace`; loads and unloads complete at once,
    the request index is the clock, churn age 0. `scoring` None: LRU; else the value
    policy, each load taking `load_ms(units)` (None: proportional to the size)."""
    cache = LocalCache(capacity, scoring=scoring)
    policy = EvictionPolicy(min_churn_age_ms=0)
    ids = [ModelId(f"model-{i}") for i in range(len(size))]
    hits = loaded = 0
    for now, index in enumerate(trace):
        model_id = ids[index]
        if cache.touch(model_id, now) is EntryState.LOADED:
            hits += 1
            continue
        loaded += size[index]
        admission = cache.admit(model_id, size[index], last_used_ms=now, now_ms=now, policy=policy)
        if not admission.admitted:
            continue  # larger than the cache: the simulator skips it too
        for victim in admission.victims:
            cache.unloaded(victim.model_id)
        cache.loaded(model_id, size[index], now, load_ms=load_ms(size[index]))
    return hits, loaded


def shifted_trace(sim: dict[str, Any]) -> list[int]:
    """First half: the goal's trace; second half: same law, ranks reshuffled (seed 43)."""
    zipf_trace: Callable[..., tuple[list[int], list[int], list[float]]] = sim["zipf_trace"]
    half = N_REQUESTS // 2
    first, _, _ = zipf_trace(N_MODELS, ALPHA, half, random.Random(SEED))
    second, _, _ = zipf_trace(N_MODELS, ALPHA, N_REQUESTS - half, random.Random(SEED + 1))
    return first + second


def one_trace(sim: dict[str, Any], name: str, trace: list[int], kind: str) -> dict[str, Any]:
    size = sizes(kind)
    capacity = CAPACITY_FRACTION * sum(size)
    n = len(trace)
    t0 = time.perf_counter()
    ref_hits, ref_bytes = sim["lru"](trace, size, capacity)
    t1 = time.perf_counter()
    bel_hits, bel_bytes = sim["belady"](trace, size, capacity)
    t2 = time.perf_counter()
    hits, loaded = replay_local_cache(trace, size, int(capacity))  # whole sizes: int() exact
    t3 = time.perf_counter()
    v_hits, v_loaded = replay_local_cache(trace, size, int(capacity), VALUE)
    t4 = time.perf_counter()
    c_hits = None
    if kind != "unit":  # same load time for every model: the policy prefers small ones
        c_hits, _ = replay_local_cache(trace, size, int(capacity), VALUE, lambda u: 1000.0)
    misses, bel_misses = n - hits, n - bel_hits
    return {
        "value_hit": v_hits / n,
        "value_miss_over_belady": (n - v_hits) / bel_misses if bel_misses else float("inf"),
        "value_bytes_over_belady": v_loaded / bel_bytes if bel_bytes else float("inf"),
        "value_const_load_time_miss_over_belady": (
            (n - c_hits) / bel_misses if c_hits is not None and bel_misses else None
        ),
        "trace": name,
        "sizes": kind,
        "requests": n,
        "capacity": int(capacity),
        "sim_lru_hit": ref_hits / n,
        "local_cache_hit": hits / n,
        "belady_hit": bel_hits / n,
        "hit_diff_vs_sim_lru": (hits - ref_hits) / n,
        "miss_over_belady": misses / bel_misses if bel_misses else float("inf"),
        "sim_lru_miss_over_belady": (n - ref_hits) / bel_misses if bel_misses else float("inf"),
        "bytes_loaded_local_cache": loaded,
        "bytes_loaded_sim_lru": ref_bytes,
        "bytes_loaded_belady": bel_bytes,
        "bytes_over_belady": loaded / bel_bytes if bel_bytes else float("inf"),
        "seconds": {
            "sim_lru": round(t1 - t0, 2),
            "belady": round(t2 - t1, 2),
            "local_cache": round(t3 - t2, 2),
            "value": round(t4 - t3, 2),
        },
    }


def run() -> list[dict[str, Any]]:
    sim = load_simulator()
    trace, _, _ = sim["zipf_trace"](N_MODELS, ALPHA, N_REQUESTS, random.Random(SEED))
    out = [one_trace(sim, "zipf", trace, kind) for kind in ("unit", "lognormal")]
    out.append(one_trace(sim, "popularity-shift", shifted_trace(sim), "unit"))
    return out


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        tag = f"{row['trace']}, {row['sizes']}"
        if row["trace"] == "zipf":
            diff = row["hit_diff_vs_sim_lru"]
            out.append(
                {
                    "goal": f"G6a LocalCache hit - sim LRU hit ({tag})",
                    "value": diff,
                    "target": f"|x| <= {HIT_TOLERANCE}",
                    "pass": abs(diff) <= HIT_TOLERANCE,
                    "local_cache_hit": row["local_cache_hit"],
                    "sim_lru_hit": row["sim_lru_hit"],
                }
            )
            ratio = row["value_miss_over_belady"]
            out.append(
                {
                    "goal": f"G6b value policy misses / Belady misses ({tag})",
                    "value": ratio,
                    "target": f"<= {BELADY_STRETCH}",
                    "pass": ratio <= BELADY_STRETCH,
                    "value_hit": row["value_hit"],
                    "belady_hit": row["belady_hit"],
                    "lru_miss_over_belady": row["miss_over_belady"],
                    "value_bytes_over_belady": row["value_bytes_over_belady"],
                    "lru_bytes_over_belady": row["bytes_over_belady"],
                    "const_load_time": row["value_const_load_time_miss_over_belady"],
                }
            )
        else:
            diff = row["value_hit"] - row["sim_lru_hit"]
            out.append(
                {
                    "goal": f"G6b value hit - LRU hit on {tag}",
                    "value": diff,
                    "target": f">= -{SHIFT_TOLERANCE}",
                    "pass": diff >= -SHIFT_TOLERANCE,
                    "value_miss_over_belady": row["value_miss_over_belady"],
                    "lru_miss_over_belady": row["miss_over_belady"],
                }
            )
    return out


def main() -> None:
    rows = run()
    print(json.dumps({"rows": rows, "goals": goals(rows)}, indent=1))


if __name__ == "__main__":
    main()
