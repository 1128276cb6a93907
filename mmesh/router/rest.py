"""I/O: the router's KServe V2 REST face (port 8008), in place of ModelMesh's rest-proxy.

Each request is converted to its V2 gRPC message by `restconv` and handed, as bytes, to an
`InferenceCaller`: the router's own gRPC inference path, called in-process, so REST gets
the same routing, loading and errors as gRPC without a second network hop. The app that
`build_rest_app` returns is served by the router's composition root.

Every answer is JSON. Router errors keep their `http_status`; aiohttp's own (404, 405,
413) are rewritten as JSON; anything unexpected is logged with its traceback and becomes 500.
A body over the limit (MM_SVC_GRPC_MAX_MSG_SIZE, the gRPC face's too) is 413 naming the
limit; a model with too many requests in flight is 429. Bodies are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from google.protobuf.message import DecodeError, Message

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.version import VERSION
from mmesh.router import restbinary, restconv
from mmesh.router.errors import RouterError

logger = logging.getLogger(__name__)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_METADATA = "/inference.GRPCInferenceService/ModelMetadata"

# Routing headers a REST client may set, passed to the gRPC path as metadata.
FORWARDED_HEADERS = ("mm-model-id", "mm-vmodel-id", "mm-balanced", "mm-timeout-ms")

SERVER_NAME = "mmesh"

_M = TypeVar("_M", bound=Message)


class InferenceCaller(Protocol):
    """The router's gRPC inference path, called with serialized request bytes."""

    async def call(self, method: str, request: bytes, headers: Mapping[str, str]) -> bytes:
        """Answers one unary call; raises `RouterError` subclasses on failure."""
        ...


class ModelReadiness(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def reason(self) -> str: ...


ReadinessOf = Callable[[str], ModelReadiness]
"""Model name -> whether it can serve; raises ModelNotFound for unknown names."""


def build_rest_app(
    caller: InferenceCaller,
    *,
    readiness: Callable[[], bool],
    max_body_bytes: int,
    model_readiness: ReadinessOf | None = None,
) -> web.Application:
    """The V2 REST application; the caller binds it (127.0.0.1 or the pod address).
    Every route of the KServe V2 REST protocol: server live/ready/metadata, model ready,
    model metadata, infer; the model routes also under `/versions/{version}`."""
    routes = _Routes(caller, readiness, max_body_bytes, model_readiness)
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[_json_errors(max_body_bytes)]
    )
    app.router.add_post("/v2/models/{name}/infer", routes.infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", routes.infer)
    app.router.add_get("/v2/models/{name}", routes.model_metadata)
    app.router.add_get("/v2/models/{name}/versions/{version}", routes.model_metadata)
    app.router.add_get("/v2/models/{name}/ready", routes.model_ready)
    app.router.add_get("/v2/models/{name}/versions/{version}/ready", routes.model_ready)
    app.router.add_get("/v2/health/live", routes.live)
    app.router.add_get("/v2/health/ready", routes.ready)
    app.router.add_get("/v2", routes.server_metadata)
    return app


class _Routes:
    def __init__(
        self,
        caller: InferenceCaller,
        readiness: Callable[[], bool],
        max_body_bytes: int,
        model_readiness: ReadinessOf | None,
    ) -> None:
        self._caller = caller
        self._readiness = readiness
        self._max_body_bytes = max_body_bytes
        self._model_readiness = model_readiness
        self._version = VERSION

    async def infer(self, request: web.Request) -> web.Response:
        name, version = _model_path(request)
        raw = await self._read_body(request)
        head, binary = restbinary.split_body(raw, request.headers.get(restbinary.HEADER))
        body = restconv.parse_json_body(head)
        message = restbinary.to_infer_request(name, version, body, binary)
        answer = await self._caller.call(
            MODEL_INFER, message.SerializeToString(), _routing_headers(request)
        )
        response = _parse(v2.ModelInferResponse(), answer)
        content, json_length = restbinary.render_response(response, body)
        if json_length is None:
            return web.Response(body=content, content_type="application/json")
        return web.Response(
            body=content,
            content_type="application/octet-stream",
            headers={restbinary.HEADER: str(json_length)},
        )

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model_path(request)
        message = v2.ModelMetadataRequest(name=name, version=version)
        answer = await self._caller.call(
            MODEL_METADATA, message.SerializeToString(), _routing_headers(request)
        )
        response = _parse(v2.ModelMetadataResponse(), answer)
        return web.json_response(restconv.metadata_to_json(response))

    async def model_ready(self, request: web.Request) -> web.Response:
        """200 when the model can serve, 4xx otherwise, as the V2 protocol says: 404 for an
        unknown name, 400 for a model whose load failed (the same answer as gRPC)."""
        name, _ = _model_path(request)
        if self._model_readiness is None:
            raise RouterError("model readiness is not wired into this REST face")
        state = self._model_readiness(name)
        if not state.ready:
            return _error(400, f"model {name} is not ready: {state.reason}")
        return web.json_response({"name": name, "ready": True})

    async def live(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, _request: web.Request) -> web.Response:
        ready = self._readiness()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, _request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": self._version, "extensions": []})

    async def _read_body(self, request: web.Request) -> bytes:
        # Refuse a declared oversize body before reading it; a chunked one is cut off by
        # aiohttp's client_max_size while it is read (HTTPRequestEntityTooLarge).
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self._max_body_bytes, actual_size=length)
        return await request.read()


def _model_path(request: web.Request) -> tuple[str, str]:
    return request.match_info["name"], request.match_info.get("version", "")


def _routing_headers(request: web.Request) -> dict[str, str]:
    return {key: request.headers[key] for key in FORWARDED_HEADERS if key in request.headers}


def _parse(message: _M, data: bytes) -> _M:
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        name = message.DESCRIPTOR.name
        raise RouterError(f"the inference path answered with a malformed {name}: {exc}") from None
    return message


def _error(status: int, message: str) -> web.Response:
    return web.json_response(restconv.error_body(message), status=status)


def _json_errors(max_body_bytes: int) -> Middleware:
    """Middleware turning every failure into a JSON error body with the right status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RouterError as exc:
            # The class only: a message about a bad body may quote the body, and request
            # payloads are never logged. The client gets the message.
            kind = type(exc).__name__
            logger.debug("REST %s %s: %d %s", request.method, request.path, exc.http_status, kind)
            return _error(exc.http_status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, _http_message(exc, request, max_body_bytes))
        except Exception:
            logger.exception("REST %s %s failed unexpectedly", request.method, request.path)
            return _error(500, "internal error; see the router log")

    return middleware


def _http_message(exc: web.HTTPException, request: web.Request, max_body_bytes: int) -> str:
    if exc.status == 404:
        return f"no such route: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body is larger than {max_body_bytes} bytes"
    return exc.reason
