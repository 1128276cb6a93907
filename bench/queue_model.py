"""Pure: a queue model of the over-commit workload, to show what an eviction policy can do
to the tail at all, clairvoyant ones included.

Pods of `slots` equal model slots, each loading one model at a time in `load_s`. A request
for a model that is loaded (or being loaded) on some pod waits for that copy to be ready,
or not at all; any other request loads the model on the pod whose loader is free first,
evicting the pod's least valuable model by the policy. Answers of hits take `hit_s`.
Requests come closed loop (`clients` callers, each sending its next request when the last
one is answered) or open loop (request n is due at n / rate, latency counted from then).

Policies:
- `lru`: evict the least recently used;
- `popular`: evict the model least often requested in the whole trace (a static top-K
  that knows the popularity in advance);
- `belady`: evict the model whose next request comes last (knows the future).

The point: with one load at a time per pod, closed-loop callers keep the load queues full
whatever the policy, so each miss waits for about clients / pods loads, and a better policy
shows as throughput, not as a shorter tail. Only an offered load that does not follow the
answers (open loop) turns fewer misses into a shorter p99.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

NEVER = float("inf")
POLICIES = ("lru", "popular", "belady")


@dataclass(frozen=True)
class Mesh:
    pods: int = 2
    slots: int = 20
    load_s: float = 0.2
    hit_s: float = 0.003


@dataclass(frozen=True)
class Outcome:
    latencies: list[float]
    """Seconds per request, in trace order."""
    loads: int

    def hit_ratio(self) -> float:
        return 1 - self.loads / len(self.latencies)

    def p99(self, skip: int = 0) -> float:
        """Nearest-rank 99th percentile of the latencies after the first `skip` requests."""
        xs = sorted(self.latencies[skip:])
        return xs[max(0, min(len(xs) - 1, round(0.99 * (len(xs) - 1))))]


def next_uses(trace: Sequence[int]) -> list[float]:
    """For each request, the index of the next request for the same model (or NEVER)."""
    out = [NEVER] * len(trace)
    last: dict[int, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        out[i] = last.get(trace[i], NEVER)
        last[trace[i]] = i
    return out


def scorer(policy: str, trace: Sequence[int]) -> Callable[[int, int, float], float]:
    """score(model, request index, time): the model with the lowest score is evicted."""
    if policy == "lru":
        return lambda model, i, t: t
    if policy == "popular":
        counts = Counter(trace)
        return lambda model, i, t: counts[model]
    if policy == "belady":
        nxt = next_uses(trace)
        return lambda model, i, t: -nxt[i]
    raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")


class _Pods:
    def __init__(self, mesh: Mesh, score: Callable[[int, int, float], float]) -> None:
        self.mesh = mesh
        self.score = score
        self.ready: list[dict[int, float]] = [{} for _ in range(mesh.pods)]
        self.value: list[dict[int, float]] = [{} for _ in range(mesh.pods)]
        self.free_at = [0.0] * mesh.pods
        self.loads = 0

    def serve(self, model: int, i: int, t: float) -> float:
        """Latency of request i for `model` arriving at t."""
        for pod, ready in enumerate(self.ready):
            if model in ready:
                self.value[pod][model] = self.score(model, i, t)
                return max(ready[model], t) - t + self.mesh.hit_s
        pod = min(range(self.mesh.pods), key=lambda p: self.free_at[p])
        done = max(self.free_at[pod], t) + self.mesh.load_s
        self.free_at[pod] = done
        self.loads += 1
        ready, value = self.ready[pod], self.value[pod]
        if len(ready) >= self.mesh.slots:
            victim = min(value, key=value.__getitem__)
            del ready[victim], value[victim]
        ready[model] = done
        value[model] = self.score(model, i, t)
        return done - t + self.mesh.hit_s


def closed_loop(trace: Sequence[int], policy: str, clients: int, mesh: Mesh = Mesh()) -> Outcome:
    pods = _Pods(mesh, scorer(policy, trace))
    free = [(0.0, c) for c in range(clients)]
    latencies = []
    for i, model in enumerate(trace):
        t, caller = heapq.heappop(free)
        latency = pods.serve(model, i, t)
        latencies.append(latency)
        heapq.heappush(free, (t + latency, caller))
    return Outcome(latencies, pods.loads)


def open_loop(trace: Sequence[int], policy: str, rate: float, mesh: Mesh = Mesh()) -> Outcome:
    pods = _Pods(mesh, scorer(policy, trace))
    latencies = [pods.serve(model, i, i / rate) for i, model in enumerate(trace)]
    return Outcome(latencies, pods.loads)
