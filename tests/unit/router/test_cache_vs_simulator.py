"""Goal G6a: in LRU mode, LocalCache hits as often as the reference LRU simulator.

The goal's own trace: 2,000 models, Zipf alpha 1.0, 200K requests, seed 42,
capacity 10 % of the total size, unit and lognormal sizes (about 0.5 s each).

The reference is `../shared/bench-ref/eviction_sim.py` (read-only, outside the
repository). That file runs its whole experiment matrix at import time, so only
its imports and function definitions are executed here; the test is skipped
when the file is not there.
"""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmesh.core.ids import ModelId
from mmesh.router.cache import EntryState, EvictionPolicy, LocalCache

REFERENCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "bench-ref" / "eviction_sim.py"
N_MODELS = 2_000
N_REQUESTS = 200_000
ALPHA = 1.0
CAPACITY_FRACTION = 0.10
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        pytest.skip(f"reference simulator not found at {REFERENCE.resolve()}")
    tree = ast.parse(REFERENCE.read_text(), filename=str(REFERENCE))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]  # not the main() call
    namespace: dict[str, Any] = {"__name__": "eviction_sim"}
    exec(compile(tree, str(REFERENCE), "exec"), namespace)
    return namespace


def _sizes(kind: str) -> list[int]:
    if kind == "unit":
        return [1] * N_MODELS
    rng = random.Random(7)  # the reference's lognormal sizes: MB, median 50
    return [max(1, int(rng.lognormvariate(math.log(50), 1.0))) for _ in range(N_MODELS)]


def _replay(trace: list[int], size: list[int], capacity: int) -> int:
    """Hits of LocalCache on `trace` when every load and unload completes at once."""
    cache = LocalCache(capacity)
    policy = EvictionPolicy(min_churn_age_ms=0)
    ids = [ModelId(f"model-{i}") for i in range(N_MODELS)]
    hits = 0
    for now, index in enumerate(trace):
        model_id = ids[index]
        if cache.touch(model_id, now) is EntryState.LOADED:
            hits += 1
            continue
        admission = cache.admit(model_id, size[index], last_used_ms=now, now_ms=now, policy=policy)
        if not admission.admitted:
            continue  # larger than the cache: the reference skips it too
        for victim in admission.victims:
            cache.unloaded(victim.model_id)
        cache.loaded(model_id, size[index], now)
    return hits


@pytest.mark.parametrize("sizes", ["unit", "lognormal"])
def test_hit_ratio_matches_the_reference_lru(reference: dict[str, Any], sizes: str) -> None:
    zipf_trace: Callable[..., tuple[list[int], list[int], list[float]]] = reference["zipf_trace"]
    lru: Callable[[list[int], list[int], float], tuple[int, int]] = reference["lru"]
    trace, _, _ = zipf_trace(N_MODELS, ALPHA, N_REQUESTS, random.Random(42))
    size = _sizes(sizes)
    capacity = CAPACITY_FRACTION * sum(size)

    expected_hits, _ = lru(trace, size, capacity)
    hits = _replay(trace, size, int(capacity))  # sizes are whole, so int() changes nothing

    assert expected_hits / N_REQUESTS > 0.5  # the trace is the skewed one we meant
    assert abs(hits - expected_hits) / N_REQUESTS <= TOLERANCE
