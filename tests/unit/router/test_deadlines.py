"""Which limit an inference request gets, and how running past it is reported."""

from __future__ import annotations

import asyncio

import pytest

from mmesh.router.deadlines import Deadline, request_deadline, within
from mmesh.router.errors import InvalidRequest, Passthrough, RequestTimeout


def test_nothing_set_means_no_limit() -> None:
    assert request_deadline({}, default_ms=0, client_remaining_s=None) is None


def test_the_default_applies_without_a_header() -> None:
    assert request_deadline({}, default_ms=2000, client_remaining_s=None) == Deadline(
        2.0, "MM_INFERENCE_TIMEOUT_MS=2000"
    )


def test_the_header_replaces_the_default_longer_or_shorter() -> None:
    for value in ("500", "60000"):
        got = request_deadline({"mm-timeout-ms": value}, default_ms=2000, client_remaining_s=None)
        assert got == Deadline(int(value) / 1000, f"mm-timeout-ms={value}")
    as_bytes = request_deadline({"mm-timeout-ms": b"700"}, default_ms=0, client_remaining_s=None)
    assert as_bytes == Deadline(0.7, "mm-timeout-ms=700")


def test_a_shorter_client_deadline_wins() -> None:
    got = request_deadline({"mm-timeout-ms": "5000"}, default_ms=0, client_remaining_s=1.25)
    assert got == Deadline(1.25, "the client's deadline")
    got = request_deadline({}, default_ms=1000, client_remaining_s=30.0)
    assert got == Deadline(1.0, "MM_INFERENCE_TIMEOUT_MS=1000")


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "soon", "", "²"])
def test_a_bad_header_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidRequest, match="mm-timeout-ms must be a positive whole number"):
        request_deadline({"mm-timeout-ms": value}, default_ms=0, client_remaining_s=None)


async def test_past_the_limit_the_error_names_it() -> None:
    with pytest.raises(RequestTimeout) as err:
        await within(Deadline(0.05, "mm-timeout-ms=50"), asyncio.sleep(5), "inference on model m")
    assert str(err.value) == (
        "inference on model m did not finish within its limit of 50 ms (mm-timeout-ms=50)"
    )
    assert err.value.grpc_code == "DEADLINE_EXCEEDED" and err.value.http_status == 504


async def test_a_deadline_exceeded_from_downstream_names_this_requests_limit() -> None:
    async def runtime_gave_up() -> bytes:
        raise Passthrough("DEADLINE_EXCEEDED", "Deadline Exceeded")

    with pytest.raises(RequestTimeout, match="limit of 800 ms"):
        await within(Deadline(0.8, "x"), runtime_gave_up(), "inference on model m")
    assert await within(None, asyncio.sleep(0, b"ok"), "w") == b"ok"
