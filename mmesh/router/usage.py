"""Pure: the requests this instance's runtime served, counted per model.

The inference path counts each request served here; the janitor takes the counts once per
rate window and turns them into request rates; this instance's record publishes the rate.
Both hold the same counter, so neither calls the other.
"""

from __future__ import annotations

from collections import Counter


class Usage:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.rpm = 0
        """Requests per minute served here over the last completed window."""

    def count(self, model_id: str) -> None:
        self.requests[model_id] += 1

    def take(self, per_minute: float) -> Counter[str]:
        """The counts since the last take (the window just ended); sets `rpm` from them."""
        counts, self.requests = self.requests, Counter()
        self.rpm = int(sum(counts.values()) * per_minute)
        return counts
