"""Moves inference bytes to the local model server without decoding them.

One pooled channel to the runtime's data port; one cached multicallable per method with no
serializers, so request and response stay opaque bytes end to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from mmesh.router.errors import (
    CopyNotHeld,
    LoadFailed,
    ModelNotHere,
    NoCapacity,
    Passthrough,
    RegistryUnavailable,
    RouterError,
    RuntimeUnavailable,
)

Metadata = Sequence[tuple[str, str | bytes]]
CallObserver = Callable[[str, str, float, float], None]
"""(method, gRPC code name, monotonic start, monotonic end) of each call."""

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""A restarted runtime or peer is reached again within about 2 s (gRPC's default backoff
grows to 2 minutes, failing every call meanwhile)."""

FAILURE_TRAILER = "mm-failure"
"""Set by a peer router on its error status: what kind of failure it was, so the sender can
tell "the model failed to load there" from an error of the model itself."""
FAILURE_KINDS: dict[str, type[RouterError]] = {
    "not-held": CopyNotHeld,  # before its base class "not-here": the first match wins
    "load": LoadFailed,
    "capacity": NoCapacity,
    "not-here": ModelNotHere,
    "registry": RegistryUnavailable,
}


class Forwarder:
    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, str | int]] = (),
        observer: CallObserver | None = None,
    ) -> None:
        """A plaintext channel, or a TLS one with `credentials` (peer routers). `target` is
        host:port or `unix:/path`; `observer` hears of every call (the runtime's metrics)."""
        self.target = target
        self.observer = observer
        channel_options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            *RECONNECT_OPTIONS,
            *options,
        ]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    async def call(
        self, method: str, payload: bytes, metadata: Metadata, timeout_s: float | None
    ) -> bytes:
        callable_ = self._calls.get(method)
        if callable_ is None:
            callable_ = self._channel.unary_unary(
                method, request_serializer=None, response_deserializer=None
            )
            self._calls[method] = callable_
        # The call is awaited here, not in a helper coroutine: one frame less to resume on
        # every request. gRPC takes a tuple only after a slow isinstance check against a
        # typing generic (about 1 % of a forwarding router's CPU); a Metadata skips it.
        md = grpc.aio.Metadata(*metadata)
        if self.observer is None:
            try:
                return await callable_(payload, metadata=md, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise _mapped(exc, self.target) from exc
        started, code = time.monotonic(), "OK"
        try:
            return await callable_(payload, metadata=md, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            mapped = _mapped(exc, self.target)
            code = mapped.grpc_code
            raise mapped from exc
        except BaseException:
            code = "CANCELLED"
            raise
        finally:
            self.observer(method, code, started, time.monotonic())

    async def close(self) -> None:
        await self._channel.close(None)


def failure_kind(exc: RouterError) -> str | None:
    for kind, cls in FAILURE_KINDS.items():
        if isinstance(exc, cls):
            return kind
    return None


def _mapped(exc: grpc.aio.AioRpcError, target: str) -> RouterError:
    code = exc.code()
    details = exc.details() or code.name
    kind = _trailer(exc, FAILURE_TRAILER)
    if isinstance(kind, str) and kind in FAILURE_KINDS:
        return FAILURE_KINDS[kind](details)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotHere(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # CANCELLED here is the other side going away (a pod stopping), not our caller:
        # another copy can answer.
        return RuntimeUnavailable(f"model server at {target} unavailable: {details}")
    return Passthrough(code.name, details)


def _trailer(exc: grpc.aio.AioRpcError, name: str) -> str | bytes | None:
    trailers: Any = exc.trailing_metadata() or ()  # aio Metadata yields (key, value) pairs
    pairs: Sequence[tuple[str, str | bytes]] = tuple(trailers)
    return next((value for key, value in pairs if key == name), None)
