"""Moves inference bytes to the local model server without decoding them.

One pooled channel to the runtime's data port; one cached multicallable per method with no
serializers, so request and response stay opaque bytes end to end.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from mmesh.router.errors import ModelNotHere, Passthrough, RuntimeUnavailable

Metadata = Sequence[tuple[str, str | bytes]]


class Forwarder:
    def __init__(self, target: str, *, max_message_bytes: int) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
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
        try:
            response: bytes = await callable_(payload, metadata=tuple(metadata), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _mapped(exc, self.target) from exc
        return response

    async def close(self) -> None:
        await self._channel.close(None)


def _mapped(exc: grpc.aio.AioRpcError, target: str) -> Exception:
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotHere(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return RuntimeUnavailable(f"model server at {target} unavailable: {details}")
    return Passthrough(code.name, details)
