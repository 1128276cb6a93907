"""The over-commit benchmark's queue model (bench/queue_model.py), on traces whose answers
can be worked out by hand, and on the benchmark's own trace for the claim it prints."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("queue_model", BENCH / "queue_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["queue_model"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


qm = _load()
ONE_POD = qm.Mesh(pods=1, slots=2, load_s=0.2, hit_s=0.0)


def test_one_model_is_loaded_once_and_waited_for_by_the_requests_behind_it() -> None:
    out = qm.open_loop([7] * 5, "lru", rate=20.0, mesh=ONE_POD)  # every 50 ms
    assert out.loads == 1 and out.hit_ratio() == 0.8
    assert out.latencies == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])


def test_misses_queue_behind_the_one_loader() -> None:
    out = qm.closed_loop([1, 2, 3], "lru", clients=3, mesh=ONE_POD)
    assert out.latencies == pytest.approx([0.2, 0.4, 0.6])


@pytest.mark.parametrize(("policy", "loads"), [("lru", 4), ("popular", 3), ("belady", 3)])
def test_each_policy_evicts_its_own_victim(policy: str, loads: int) -> None:
    # when 3 comes the cache holds 1 and 2, and 2 was used last: LRU evicts 1 and loads it
    # again; a policy that knows 1 is the popular one, or comes back, evicts 2
    trace = [1, 1, 1, 2, 3, 1]
    assert qm.closed_loop(trace, policy, clients=1, mesh=ONE_POD).loads == loads


def test_closed_loop_p99_is_the_same_for_every_policy_on_an_over_committed_trace() -> None:
    rng = random.Random(42)
    weights = [1 / (i + 1) for i in range(400)]
    trace = rng.choices(range(400), weights=weights, k=3000)
    mesh = qm.Mesh(pods=2, slots=20, load_s=0.2)
    runs = {p: qm.closed_loop(trace, p, clients=8, mesh=mesh) for p in qm.POLICIES}
    assert runs["belady"].hit_ratio() > runs["lru"].hit_ratio() + 0.1
    assert runs["belady"].p99() == pytest.approx(runs["lru"].p99(), rel=0.05)
    opened = {p: qm.open_loop(trace, p, rate=20.0, mesh=mesh) for p in ("lru", "belady")}
    assert opened["belady"].p99() < 0.6 * opened["lru"].p99()
