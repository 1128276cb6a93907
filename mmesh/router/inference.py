"""The data plane: route one inference call to the model it names and forward its bytes.

The model id comes from field 1 of the request (ModelInfer, ModelMetadata: read as a
vmodel id first, then as a model id) or from the `mm-model-id` / `mm-vmodel-id` headers.
Everything is read from memory: the registry mirror and the local cache; no etcd call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from mmesh.core.records import ModelRecord
from mmesh.router import wire
from mmesh.router.errors import InvalidRequest, ModelNotFound, ModelNotHere, Unimplemented
from mmesh.router.forwarding import Forwarder
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry

logger = logging.getLogger(__name__)

MODEL_ID_HEADER = "mm-model-id"
VMODEL_ID_HEADER = "mm-vmodel-id"
LEGACY_MODEL_ID_HEADER = "tas-model-id"

# Methods whose request names the model in a field: (field path, read as vmodel id first).
ID_EXTRACTION: Mapping[str, tuple[int, ...]] = {
    "/inference.GRPCInferenceService/ModelInfer": (1,),
    "/inference.GRPCInferenceService/ModelMetadata": (1,),
}


def _header(headers: Mapping[str, str | bytes], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        binary = headers.get(f"{name}-bin")
        if binary is None:
            return None
        return binary.decode() if isinstance(binary, bytes) else binary
    return value.decode() if isinstance(value, bytes) else value


class InferenceRouter:
    def __init__(
        self,
        *,
        registry: Registry,
        local: LocalModels,
        forwarder: Forwarder,
        metrics: RouterMetrics,
    ) -> None:
        self.registry = registry
        self.local = local
        self.forwarder = forwarder
        self.metrics = metrics
        info = local.info
        self._injection = {f"/{m}": path for m, path in info.id_injection.items()}
        self._allow_any = info.allow_any_method

    def resolve(
        self, method: str, payload: bytes, headers: Mapping[str, str | bytes]
    ) -> tuple[str, ModelRecord]:
        """The concrete model id a call is for, and its record."""
        model_header = _header(headers, MODEL_ID_HEADER) or _header(headers, LEGACY_MODEL_ID_HEADER)
        vmodel_header = _header(headers, VMODEL_ID_HEADER)
        if model_header and vmodel_header:
            raise InvalidRequest("only one of mm-model-id and mm-vmodel-id may be set")
        path = ID_EXTRACTION.get(method)
        name = wire.read_string_field(payload, path) if path else None
        if name:
            return self._by_name(name)
        if vmodel_header:
            return self._by_vmodel(vmodel_header)
        if model_header:
            return self._by_model(model_header)
        raise InvalidRequest(
            f"{method} must include the mm-model-id or mm-vmodel-id header"
            if path is None
            else f"{method}: model name is empty"
        )

    def _by_name(self, name: str) -> tuple[str, ModelRecord]:
        if self.registry.vmodels.get(name) is not None:
            return self._by_vmodel(name)
        return self._by_model(name)

    def _by_vmodel(self, vmodel_id: str) -> tuple[str, ModelRecord]:
        vmodel = self.registry.vmodels.get(vmodel_id)
        if vmodel is None:
            raise ModelNotFound(f"vmodel {vmodel_id} not found")
        return self._by_model(vmodel.active_model)

    def _by_model(self, model_id: str) -> tuple[str, ModelRecord]:
        record = self.registry.models.get(model_id)
        if record is None:
            raise ModelNotFound(f"model {model_id} not found")
        return model_id, record

    async def invoke(
        self,
        method: str,
        payload: bytes,
        headers: Mapping[str, str | bytes],
        timeout_s: float | None = None,
    ) -> bytes:
        model_id, record = self.resolve(method, payload, headers)
        path = self._injection.get(method)
        if path is None and not self._allow_any and method not in ID_EXTRACTION:
            raise Unimplemented(f"method {method} is not served by this runtime")
        if path is not None:
            payload = wire.replace_string_field(payload, path, model_id)
        metadata = _forwarded_metadata(headers, model_id)
        try:
            return await self._serve(method, model_id, record, payload, metadata, timeout_s)
        except ModelNotHere:
            logger.warning("runtime lost model %s; reloading it once", model_id)
            self.local.evict(model_id)
            await self.local.drain()
            return await self._serve(method, model_id, record, payload, metadata, timeout_s)

    async def call(self, method: str, request: bytes, headers: Mapping[str, str]) -> bytes:
        """The REST face's entry: the same path as a gRPC call."""
        return await self.invoke(method, request, headers)

    async def _serve(
        self,
        method: str,
        model_id: str,
        record: ModelRecord,
        payload: bytes,
        metadata: Sequence[tuple[str, str | bytes]],
        timeout_s: float | None,
    ) -> bytes:
        self.local.touch(model_id)
        if not self.local.is_loaded(model_id):
            started = time.monotonic()
            await self.local.ensure_loaded(model_id, record)
            self.metrics.cache_miss_ms.observe((time.monotonic() - started) * 1000)
        return await self.forwarder.call(method, payload, metadata, timeout_s)


_DROPPED_HEADERS = frozenset(
    {
        MODEL_ID_HEADER,
        f"{MODEL_ID_HEADER}-bin",
        VMODEL_ID_HEADER,
        f"{VMODEL_ID_HEADER}-bin",
        LEGACY_MODEL_ID_HEADER,
        "mm-balanced",
        "user-agent",
        "content-type",
        "te",
        "grpc-accept-encoding",
        "grpc-timeout",
        "accept-encoding",
    }
)


def _forwarded_metadata(
    headers: Mapping[str, str | bytes], model_id: str
) -> list[tuple[str, str | bytes]]:
    metadata: list[tuple[str, str | bytes]] = [
        (k, v) for k, v in headers.items() if k not in _DROPPED_HEADERS and not k.startswith(":")
    ]
    if model_id.isascii():
        metadata.append((MODEL_ID_HEADER, model_id))
    else:
        metadata.append((f"{MODEL_ID_HEADER}-bin", model_id.encode()))
    return metadata
