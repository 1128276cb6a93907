"""Pure: what keeping a loaded model is worth, as a timestamp every pod can compare.

The default eviction policy ("value") keeps the models whose loss would cost the most load
time per unit of cache space: a model's worth is its recent request rate times its load
time per 8 KiB unit. LRU (evict the least recently used) stays selectable.

A value is kept in log space and in milliseconds, so that it reads like a last-use time:

    value = tau * ln(sum over uses i of exp(t_i / tau))  +  tau * ln(load ms per unit / 1 ms)

- One use at `t` of a model that costs 1 ms per unit to load: value == t, exactly what LRU
  calls its last use; so an LRU pod's `lruTime` and a value pod's victim value compare.
- Uses decay with time constant `tau`: k uses around `t` are worth one use at t + tau*ln(k).
- The value does not change while the model is idle, and is measured on the shared wall
  clock, so the least valuable copy of one pod compares with another pod's (placement
  loads new copies where the least valuable model of the mesh lives).
- A model's frequency counts at most `max_count` recent uses, so models that were popular
  before a shift in traffic fall behind within tau*ln(max_count).
- A model evicted and requested again keeps its history (`History`), so a frequent model
  that had to go comes back with its frequency, and a one-off model evicts other one-offs
  instead of the frequent ones (the admission filter of W-TinyLFU, in one ordering).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from mmesh.core.ids import ModelId

REFERENCE_MS_PER_UNIT = 1.0
"""Load cost at which the cost term is 0."""
COST_LN_LIMIT = 8.0
"""The cost term is held within +-8 tau: no model is kept for ever for being expensive."""
HISTORY_HORIZON_TAUS = 6.0
"""History older than this many tau is worth less than 0.25 % of one use: forgotten."""


class PolicyKind(enum.StrEnum):
    """`MM_EVICTION_POLICY`."""

    LRU = "lru"
    VALUE = "value"


@dataclass(frozen=True, slots=True)
class Scoring:
    """Parameters of the value policy."""

    tau_ms: float
    """Decay time constant of a model's use frequency."""
    max_count: float = 32.0
    """Uses a model's frequency may count at most."""

    def __post_init__(self) -> None:
        if not self.tau_ms > 0:
            raise ValueError(f"tau_ms must be positive: {self.tau_ms}")
        if not self.max_count >= 1:
            raise ValueError(f"max_count must be at least 1: {self.max_count}")

    @property
    def ceiling_ms(self) -> float:
        """How far above the time of its latest use a frequency can reach."""
        return self.tau_ms * math.log(self.max_count)

    def first_use(self, at_ms: float) -> float:
        return float(at_ms)

    def used(self, frequency: float, at_ms: float) -> float:
        """The frequency term after one more use at `at_ms` (log-sum-exp, capped)."""
        tau = self.tau_ms
        if at_ms >= frequency:
            out = at_ms + tau * math.log1p(math.exp((frequency - at_ms) / tau))
        else:
            out = frequency + tau * math.log1p(math.exp((at_ms - frequency) / tau))
        return min(out, at_ms + self.ceiling_ms)

    def cost_term(self, load_ms: float, units: int) -> float:
        """tau * ln(load ms per unit), held within +-COST_LN_LIMIT tau."""
        per_unit = max(load_ms, 1.0) / max(units, 1) / REFERENCE_MS_PER_UNIT
        ln = max(-COST_LN_LIMIT, min(COST_LN_LIMIT, math.log(per_unit)))
        return self.tau_ms * ln

    def forgotten_before(self, now_ms: float) -> float:
        """Frequencies below this are worth nothing any more."""
        return now_ms - HISTORY_HORIZON_TAUS * self.tau_ms


class History:
    """Frequencies of models no longer in the cache, so that their next load resumes them.

    Bounded by time, not count: entries older than HISTORY_HORIZON_TAUS are dropped; the
    sweep runs when the history has doubled since the last one (amortised O(1))."""

    __slots__ = ("_frequency", "_next_sweep", "scoring")

    def __init__(self, scoring: Scoring) -> None:
        self.scoring = scoring
        self._frequency: dict[ModelId, float] = {}
        self._next_sweep = 1024

    def __len__(self) -> int:
        return len(self._frequency)

    def remember(self, model_id: ModelId, frequency: float, now_ms: float) -> None:
        self._frequency[model_id] = frequency
        if len(self._frequency) >= self._next_sweep:
            cutoff = self.scoring.forgotten_before(now_ms)
            self._frequency = {m: f for m, f in self._frequency.items() if f >= cutoff}
            self._next_sweep = max(1024, 2 * len(self._frequency))

    def resume(self, model_id: ModelId, at_ms: float) -> float:
        """The model's frequency after a use at `at_ms`, its history included (and taken)."""
        before = self._frequency.pop(model_id, None)
        if before is None or before < self.scoring.forgotten_before(at_ms):
            return self.scoring.first_use(at_ms)
        return self.scoring.used(before, at_ms)
