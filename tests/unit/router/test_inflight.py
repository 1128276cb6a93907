"""The per-model in-flight bound (mmesh.router.inflight): who may enter, and counting out."""

from __future__ import annotations

import pytest

from mmesh.router.inflight import UNBOUNDED, InflightLimiter


def test_a_bounded_model_admits_up_to_the_limit_then_refuses() -> None:
    limiter = InflightLimiter(2)

    assert [limiter.try_enter("m") for _ in range(3)] == [True, True, False]
    assert limiter.in_flight("m") == 2


def test_a_refused_request_is_not_counted_and_a_finished_one_makes_room() -> None:
    limiter = InflightLimiter(1)
    assert limiter.try_enter("m")
    assert not limiter.try_enter("m")

    limiter.leave("m")

    assert limiter.in_flight("m") == 0
    assert limiter.try_enter("m")


def test_models_are_bounded_separately() -> None:
    limiter = InflightLimiter(1)
    assert limiter.try_enter("busy")

    assert limiter.try_enter("other")
    assert not limiter.try_enter("busy")
    assert (limiter.in_flight("busy"), limiter.in_flight("other")) == (1, 1)


def test_unbounded_admits_everything() -> None:
    limiter = InflightLimiter(UNBOUNDED)

    assert not limiter.bounded
    assert all(limiter.try_enter("m") for _ in range(10_000))


def test_idle_models_leave_no_counter_behind() -> None:
    limiter = InflightLimiter(3)
    for model in ("a", "b"):
        limiter.try_enter(model)
        limiter.leave(model)

    assert limiter._counts == {}


def test_leaving_more_than_entered_never_goes_negative() -> None:
    limiter = InflightLimiter(1)
    limiter.leave("m")

    assert limiter.in_flight("m") == 0
    assert limiter.try_enter("m")


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="0 \\(unbounded\\) or more"):
        InflightLimiter(-1)
