"""A forwarded call carries what is left of the request's deadline, not the whole limit."""

from __future__ import annotations

import time

from mmesh.router.inference import MIN_CALL_TIMEOUT_S, _Call


def call_expiring_in(seconds: float | None) -> _Call:
    expires_at = None if seconds is None else time.monotonic() + seconds
    return _Call("/inference.GRPCInferenceService/ModelInfer", "m", b"", {}, expires_at, True)


def test_the_limit_a_call_gets_shrinks_as_the_request_waits() -> None:
    call = call_expiring_in(0.5)
    first = call.timeout_s
    time.sleep(0.2)
    later = call.timeout_s
    assert first is not None and later is not None
    assert 0.45 < first <= 0.5
    assert 0.2 < later <= first - 0.19


def test_a_spent_deadline_still_goes_out_as_a_positive_limit() -> None:
    assert call_expiring_in(-3.0).timeout_s == MIN_CALL_TIMEOUT_S


def test_no_deadline_means_no_limit() -> None:
    assert call_expiring_in(None).timeout_s is None
