"""The inference entry shared by the gRPC and REST faces: the request's deadline, payload
processors, request metrics, then the router.

The model a request names is resolved from the mirror only when something needs it (per-model
metric labels, payload processors), as `InferenceRouter` resolves it anyway: no etcd call.
Requests a peer router forwarded here (`mm-hop`) are internal: they are neither counted as
external requests nor shown to payload processors again, the ingress router did that.
`CURRENT` carries the request's ids and arrival time down to the runtime call, where the
invoke-model and queue-delay histograms are recorded (`RuntimeCallObserver`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

from mmesh.core.clock import now_ms
from mmesh.core.failures import failed_instances
from mmesh.core.ids import InstanceId
from mmesh.router import peers, wire
from mmesh.router.deadlines import request_deadline, within
from mmesh.router.errors import ModelNotFound, RouterError
from mmesh.router.inference import ID_EXTRACTION, InferenceRouter
from mmesh.router.metrics import RouterMetrics
from mmesh.router.payloads import Payload, payload_metadata
from mmesh.router.payloadsink import PayloadSinks

VMODEL_HEADER = "mm-vmodel-id"
MODEL_HEADER = "mm-model-id"


class CallInfo(NamedTuple):  # a tuple: built on every request
    model_id: str
    vmodel_id: str
    arrived: float
    """time.monotonic() when the request reached this router."""


CURRENT: ContextVar[CallInfo | None] = ContextVar("mmesh_call", default=None)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


class RuntimeCallObserver:
    """Called by the runtime `Forwarder` after each call: invoke time and queue delay."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def __call__(self, method: str, code: str, started: float, ended: float) -> None:
        info = CURRENT.get()
        model_id, vmodel_id = (info.model_id, info.vmodel_id) if info else ("", "")
        elapsed_ms = (ended - started) * 1000
        self.metrics.observe_invoke(
            method, code, elapsed_ms, model_id=model_id, vmodel_id=vmodel_id
        )
        if info is not None:
            delay_ms = max(0.0, started - info.arrived) * 1000
            self.metrics.observe_queue_delay(delay_ms, model_id=model_id, vmodel_id=vmodel_id)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class DataPlane:
    def __init__(
        self,
        router: InferenceRouter,
        metrics: RouterMetrics,
        *,
        default_timeout_ms: int = 0,
        sinks: PayloadSinks | None = None,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.default_timeout_ms = default_timeout_ms
        self.sinks = sinks if sinks is not None and sinks.processors else None
        self._ids = itertools.count(1)
        self._prefix = router.local.instance_id

    def requested_name(
        self, method: str, payload: bytes, headers: Mapping[str, str | bytes]
    ) -> str:
        """The model or vmodel the request names (for messages); may be empty."""
        path = ID_EXTRACTION.get(method)
        name = wire.read_string_field(payload, path) if path else None
        return name or _text(headers.get(VMODEL_HEADER)) or _text(headers.get(MODEL_HEADER))

    def _resolve_ids(
        self, method: str, payload: bytes, headers: Mapping[str, str | bytes]
    ) -> tuple[str, str]:
        model_id, _ = self.router.resolve(method, payload, headers)
        name = self.requested_name(method, payload, headers)
        vmodel_id = name if self.router.registry.vmodels.get(name) is not None else ""
        return model_id, vmodel_id

    async def invoke(
        self,
        method: str,
        payload: bytes,
        headers: Mapping[str, str | bytes],
        client_remaining_s: float | None = None,
    ) -> bytes:
        arrived = time.monotonic()
        internal = peers.hop_count(headers) > 0
        sinks = None if internal else self.sinks
        model_id = vmodel_id = payload_id = ""
        code, response = "OK", None
        try:
            deadline = request_deadline(
                headers, default_ms=self.default_timeout_ms, client_remaining_s=client_remaining_s
            )
            if self.metrics.config.per_model or sinks is not None:
                model_id, vmodel_id = self._resolve_ids(method, payload, headers)
            CURRENT.set(CallInfo(model_id, vmodel_id, arrived))
            if sinks is not None:
                payload_id = f"{self._prefix}-{next(self._ids)}"
                sinks.offer(
                    Payload(payload_id, model_id, vmodel_id, method, "request", payload,
                            metadata=payload_metadata(headers))
                )  # fmt: skip
            if deadline is None:
                response = await self.router.invoke(method, payload, headers)
                return response
            if deadline.is_clients_own:  # what is left of it still goes with each call out
                response = await self.router.invoke(method, payload, headers, deadline.seconds)
                return response
            response = await within(
                deadline,
                self.router.invoke(method, payload, headers, deadline.seconds),
                lambda: f"inference on model {self.requested_name(method, payload, headers)}",
            )
            return response
        except Exception as exc:
            code = exc.grpc_code if isinstance(exc, RouterError) else "INTERNAL"
            raise
        finally:
            if not internal:
                self.metrics.observe_request(
                    method,
                    code,
                    (time.monotonic() - arrived) * 1000,
                    request_bytes=len(payload),
                    response_bytes=len(response) if response is not None else None,
                    model_id=model_id,
                    vmodel_id=vmodel_id,
                )
            if sinks is not None and payload_id:
                sinks.offer(
                    Payload(payload_id, model_id, vmodel_id, method, "response", response or b"",
                            status=code)
                )  # fmt: skip

    async def call(self, method: str, request: bytes, headers: Mapping[str, str]) -> bytes:
        """The REST face's entry (no client deadline: the header or the default)."""
        return await self.invoke(method, request, headers)

    def model_readiness(self, name: str) -> Readiness:
        """ModelReady for gRPC and REST alike. A registered model is ready when it has a
        loaded copy or could get one: a request to it loads it (the first one pays the
        load). It is not ready while a recent load failure stands and nothing holds a copy.
        ModelNotFound for names that are neither a vmodel nor a model."""
        model_id, record = self.router._by_name(name)
        if record.loaded_in:
            return Readiness(True, f"model {model_id} is loaded")
        failed = failed_instances(
            record, now_ms=now_ms(), expiry_ms=self.router.local.failure_expiry_ms
        )
        if failed:
            messages = "; ".join(
                f"{iid}: {record.failures.get(InstanceId(iid), 'load failed')}"
                for iid in sorted(failed)
            )
            return Readiness(False, f"model {model_id} failed to load: {messages}")
        return Readiness(True, f"model {model_id} is registered; the first request loads it")


__all__ = ["CURRENT", "CallInfo", "DataPlane", "ModelNotFound", "Readiness"]
