"""Inference deadlines (reference issue #134): how long one request may take, and running it
within that time.

The limit is the shortest of the client's own gRPC deadline, the request's `mm-timeout-ms`
header and the router's default (MM_INFERENCE_TIMEOUT_MS). It covers the whole request on
this router: routing, a cache-miss load it waits for, the forward to a peer or the runtime.
What is left of the limit travels with the forwarded call as its gRPC deadline, and the call
is cancelled when the limit passes here, so peers and the runtime stop when the client stops
waiting.
A request past its limit ends with DEADLINE_EXCEEDED (REST: 504) naming the limit and where
it came from; the model, its load (shared loads are shielded from the waiters) and the
requests behind it carry on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mmesh.core.numbers import whole_number
from mmesh.router.errors import InvalidRequest, RequestTimeout, RouterError

TIMEOUT_HEADER = "mm-timeout-ms"
CLIENT_DEADLINE = "the client's deadline"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Deadline:
    seconds: float
    source: str
    """What set it, for the error message: the header, the setting, or the client."""

    def describe(self) -> str:
        return f"{self.seconds * 1000:.0f} ms ({self.source})"

    @property
    def is_clients_own(self) -> bool:
        """Set by the client's gRPC deadline: gRPC ends the call then by itself (and cancels
        its handler), so the router need not watch the time as well."""
        return self.source == CLIENT_DEADLINE


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def request_deadline(
    headers: Mapping[str, str | bytes], *, default_ms: int, client_remaining_s: float | None
) -> Deadline | None:
    """The limit for one request, or None when nothing limits it. InvalidRequest when the
    header is not a positive whole number of milliseconds."""
    candidates: list[Deadline] = []
    raw = headers.get(TIMEOUT_HEADER)
    if raw is not None:
        text = _text(raw).strip()
        ms = whole_number(text)
        if not ms:
            raise InvalidRequest(
                f"{TIMEOUT_HEADER} must be a positive whole number of milliseconds, got {text!r}"
            )
        candidates.append(Deadline(ms / 1000, f"{TIMEOUT_HEADER}={text}"))
    elif default_ms > 0:
        candidates.append(Deadline(default_ms / 1000, f"MM_INFERENCE_TIMEOUT_MS={default_ms}"))
    if client_remaining_s is not None:
        candidates.append(Deadline(max(0.0, client_remaining_s), CLIENT_DEADLINE))
    return min(candidates, key=lambda d: d.seconds) if candidates else None


def timed_out(deadline: Deadline, what: str) -> RequestTimeout:
    return RequestTimeout(f"{what} did not finish within its limit of {deadline.describe()}")


async def within(deadline: Deadline | None, work: Awaitable[T], what: str | Callable[[], str]) -> T:
    """`work`, cut off at the deadline. A DEADLINE_EXCEEDED from further down (a peer, the
    runtime) is reported the same way, naming this request's limit. `what` names the work
    in the message (a callable: worked out only when the deadline passes)."""
    if deadline is None:
        return await work
    try:
        async with asyncio.timeout(deadline.seconds):  # no task per request, as wait_for makes
            return await work
    except TimeoutError:
        raise timed_out(deadline, _named(what)) from None
    except RouterError as exc:
        if exc.grpc_code == "DEADLINE_EXCEEDED":
            raise timed_out(deadline, _named(what)) from exc
        raise


def _named(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
