"""Pure: payload processors (MM_PAYLOAD_PROCESSORS, `payloadProcessors` in
model-serving-config): which sinks want which request and response payloads, and what they
are sent.

The setting is a space-separated list of URIs, as in the reference:
  `logger://*`                          log every payload (INFO, size and ids, not the bytes)
  `http://host:port/path`               POST every payload to that URL as JSON
  `https://...`                         the same over TLS
  `...?my-model`                        only payloads of this model (concrete or vmodel id;
                                        empty or `*` = any)
  `...#ModelInfer`                      only this method (its short name, or the full
                                        `inference.GRPCInferenceService/ModelInfer`)
The JSON body is the reference's: `id`, `modelid`, `data` (base64 of the raw gRPC message),
`kind` (`request` / `response`), `status` (gRPC code name of a response, empty for a
request), `metadata` (request headers; `-bin` ones base64); plus our `vmodelid` and `method`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class BadPayloadProcessor(ValueError):
    pass


class SinkKind(StrEnum):
    LOGGER = "logger"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Processor:
    kind: SinkKind
    url: str
    """The POST target (without query and fragment); the definition itself for loggers."""
    model_id: str | None = None
    method: str | None = None

    def wants(self, payload: Payload) -> bool:
        if self.model_id is not None and self.model_id not in (payload.model_id, payload.vmodel_id):
            return False
        if self.method is None:
            return True
        method = payload.method.lstrip("/")
        return self.method in (method, method.rpartition("/")[2])


@dataclass(frozen=True, slots=True)
class Payload:
    id: str
    model_id: str
    vmodel_id: str
    method: str
    kind: str
    """`request` or `response`."""
    data: bytes
    status: str = ""
    metadata: tuple[tuple[str, str | bytes], ...] = ()


def _filter(value: str) -> str | None:
    text = value.lstrip("/")
    return None if text in ("", "*") else text


def parse_processor(definition: str) -> Processor:
    """One URI of MM_PAYLOAD_PROCESSORS; BadPayloadProcessor says what is wrong with it."""
    rest, _, fragment = definition.partition("#")
    rest, _, query = rest.partition("?")
    scheme, sep, location = rest.partition("://")
    scheme = scheme.lower()
    model_id, method = _filter(query), _filter(fragment)
    if sep and scheme == "logger":
        return Processor(SinkKind.LOGGER, definition, model_id, method)
    if sep and scheme in ("http", "https"):
        host, slash, path = location.partition("/")
        if not host or host.startswith(":"):
            raise BadPayloadProcessor(f"payload processor {definition!r} has no host")
        return Processor(
            SinkKind.HTTP, f"{scheme}://{host}/{path if slash else ''}", model_id, method
        )
    raise BadPayloadProcessor(
        f"payload processor {definition!r} is not logger://..., http://... or https://..."
    )


def parse_processors(raw: str) -> tuple[tuple[Processor, ...], tuple[str, ...]]:
    """The processors of MM_PAYLOAD_PROCESSORS, and a message for each definition that is
    not one (skipped, as the reference skips what it cannot parse)."""
    found: list[Processor] = []
    problems: list[str] = []
    for definition in raw.split():
        try:
            found.append(parse_processor(definition))
        except BadPayloadProcessor as exc:
            problems.append(str(exc))
    return tuple(found), tuple(problems)


def matching(processors: Sequence[Processor], payload: Payload) -> list[Processor]:
    return [p for p in processors if p.wants(payload)]


def _metadata(pairs: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        if isinstance(value, bytes):
            out[key] = base64.b64encode(value).decode()
        else:
            out[key] = value
    return out


def body(payload: Payload) -> bytes:
    """The JSON document an http(s) sink receives."""
    return json.dumps(
        {
            "id": payload.id,
            "modelid": payload.model_id,
            "vmodelid": payload.vmodel_id,
            "method": payload.method.lstrip("/"),
            "kind": payload.kind,
            "status": payload.status,
            "data": base64.b64encode(payload.data).decode(),
            "metadata": _metadata(payload.metadata),
        }
    ).encode()


def log_line(payload: Payload) -> str:
    """What a logger sink writes: ids and sizes, never the bytes."""
    status = f" {payload.status}" if payload.status else ""
    return (
        f"payload {payload.kind} {payload.id} {payload.method.lstrip('/')} "
        f"model={payload.model_id} vmodel={payload.vmodel_id or '-'}{status} "
        f"{len(payload.data)} bytes"
    )


SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def payload_metadata(headers: Mapping[str, str | bytes]) -> tuple[tuple[str, str | bytes], ...]:
    """The request headers a sink sees: no credentials, no gRPC/HTTP transport headers."""
    return tuple(
        (k, v)
        for k, v in headers.items()
        if k.lower() not in SENSITIVE_HEADERS and not k.startswith((":", "grpc-"))
    )
