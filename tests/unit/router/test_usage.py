"""The request counter the inference path and the janitor share (mmesh.router.usage)."""

from __future__ import annotations

from mmesh.router.usage import Usage


def test_take_returns_the_window_counts_sets_the_rate_and_starts_a_new_window() -> None:
    usage = Usage()
    for model_id in ["m1", "m1", "m2"]:
        usage.count(model_id)
    counts = usage.take(per_minute=6.0)
    assert counts == {"m1": 2, "m2": 1}
    assert usage.rpm == 18
    assert usage.take(per_minute=6.0) == {}
    assert usage.rpm == 0


def test_the_rate_is_zero_before_the_first_window_ends() -> None:
    usage = Usage()
    usage.count("m1")
    assert usage.rpm == 0
