"""gRPC faces of the router on the external port: the ModelMesh management API, the V2
health and metadata RPCs the router answers itself, and a catch-all handler that routes
every other unary call to the model it names, as raw bytes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from mmesh.core.numbers import whole_number
from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.core.proto import model_mesh_pb2_grpc as mm_grpc
from mmesh.core.version import VERSION
from mmesh.router import peers
from mmesh.router.dataplane import DataPlane
from mmesh.router.errors import (
    InvalidRequest,
    ModelNotFound,
    RouterError,
    checked_model_id,
    checked_vmodel_id,
)
from mmesh.router.forwarding import FAILURE_TRAILER, failure_kind
from mmesh.router.management import Management, ModelInfo, VModelStatusView
from mmesh.router.modelstatus import ModelStatusView

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
Handler = Callable[..., Awaitable[T]]

MESH_SERVICE = "mmesh.ModelMesh"
V2_SERVICE = "inference.GRPCInferenceService"
ROUTER_ANSWERED = frozenset({"ServerLive", "ServerReady", "ServerMetadata", "ModelReady"})


async def abort_with(context: Context, exc: Exception) -> None:
    if isinstance(exc, RouterError):
        kind = failure_kind(exc)
        if kind is not None:
            context.set_trailing_metadata(((FAILURE_TRAILER, kind),))
        await context.abort(grpc.StatusCode[exc.grpc_code], str(exc))
    logger.exception("unexpected error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


def grpc_errors(handler: Handler[T]) -> Handler[T]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await abort_with(context, exc)
            raise AssertionError("unreachable") from exc

    return wrapper


def status_to_proto(view: ModelStatusView) -> mm.ModelStatusInfo:
    status = mm.ModelStatusInfo.ModelStatus.ValueType
    info = mm.ModelStatusInfo(status=status(view.state), errors=list(view.errors))
    for copy in view.copies:
        info.modelCopyInfos.add(
            location=copy.location, copyStatus=status(copy.state), time=copy.time_ms
        )
    return info


def vmodel_to_proto(view: VModelStatusView) -> mm.VModelStatusInfo:
    info = mm.VModelStatusInfo(
        status=mm.VModelStatusInfo.VModelStatus.ValueType(view.state),
        activeModelId=view.active_model,
        targetModelId=view.target_model,
        owner=view.owner,
    )
    if view.active is not None:
        info.activeModelStatus.CopyFrom(status_to_proto(view.active))
    if view.target is not None:
        info.targetModelStatus.CopyFrom(status_to_proto(view.target))
    return info


MIN_COPIES_HEADER = "mm-min-copies"
"""Our registration option: keep at least this many copies loaded, used or not."""


def _min_copies(context: Context) -> int:
    value = dict(context.invocation_metadata() or ()).get(MIN_COPIES_HEADER, "0")
    text = value.decode() if isinstance(value, bytes) else str(value)
    copies = whole_number(text)
    if copies is None:
        raise InvalidRequest(f"{MIN_COPIES_HEADER} must be a non-negative integer, got {text!r}")
    return copies


def _info(msg: mm.ModelInfo) -> ModelInfo:
    return ModelInfo(type=msg.type, path=msg.path, key=msg.key)


class ModelMeshServicer(mm_grpc.ModelMeshServicer):
    def __init__(self, management: Management, instance_id: str) -> None:
        self.m = management
        self.instance_id = instance_id

    @grpc_errors
    async def registerModel(
        self, request: mm.RegisterModelRequest, context: Context
    ) -> mm.ModelStatusInfo:
        view = await self.m.register(
            request.modelId,
            _info(request.modelInfo),
            load_now=request.loadNow,
            sync=request.sync,
            last_used_ms=request.lastUsedTime,
            min_copies=_min_copies(context),
        )
        return status_to_proto(view)

    @grpc_errors
    async def unregisterModel(
        self, request: mm.UnregisterModelRequest, context: Context
    ) -> mm.UnregisterModelResponse:
        await self.m.unregister(request.modelId)
        return mm.UnregisterModelResponse()

    @grpc_errors
    async def getModelStatus(
        self, request: mm.GetStatusRequest, context: Context
    ) -> mm.ModelStatusInfo:
        return status_to_proto(self.m.model_status(checked_model_id(request.modelId)))

    @grpc_errors
    async def ensureLoaded(
        self, request: mm.EnsureLoadedRequest, context: Context
    ) -> mm.ModelStatusInfo:
        headers = dict(context.invocation_metadata() or ())
        hop = peers.hop_of(headers)
        view = await self.m.ensure_loaded(
            request.modelId,
            sync=request.sync,
            last_used_ms=request.lastUsedTime,
            here=hop.hops > 0 and hop.dest == self.instance_id,
            extra=hop.wants_extra,
        )
        return status_to_proto(view)

    @grpc_errors
    async def setVModel(
        self, request: mm.SetVModelRequest, context: Context
    ) -> mm.VModelStatusInfo:
        view = await self.m.set_vmodel(
            request.vModelId,
            request.targetModelId,
            info=_info(request.modelInfo) if request.HasField("modelInfo") else None,
            owner=request.owner,
            update_only=request.updateOnly,
            expected_target=request.expectedTargetModelId,
            auto_delete=request.autoDeleteTargetModel,
            load_now=request.loadNow,
            force=request.force,
            sync=request.sync,
            min_copies=_min_copies(context),
        )
        return vmodel_to_proto(view)

    @grpc_errors
    async def deleteVModel(
        self, request: mm.DeleteVModelRequest, context: Context
    ) -> mm.DeleteVModelResponse:
        await self.m.delete_vmodel(request.vModelId, request.owner)
        return mm.DeleteVModelResponse()

    @grpc_errors
    async def getVModelStatus(
        self, request: mm.GetVModelStatusRequest, context: Context
    ) -> mm.VModelStatusInfo:
        vmodel_id = checked_vmodel_id(request.vModelId)
        return vmodel_to_proto(self.m.vmodel_status(vmodel_id, request.owner))


class RouterAnswered:
    """V2 health and metadata calls answered without a model server."""

    def __init__(self, dataplane: DataPlane, ready: Callable[[], bool]) -> None:
        self.dataplane = dataplane
        self.ready = ready

    async def ServerLive(
        self, request: v2.ServerLiveRequest, context: Context
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: v2.ServerReadyRequest, context: Context
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.ready())

    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: Context
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="mmesh", version=VERSION, extensions=[])

    @grpc_errors
    async def ModelReady(
        self, request: v2.ModelReadyRequest, context: Context
    ) -> v2.ModelReadyResponse:
        """Ready = it can serve now (loaded, or registered and loadable: the first request
        pays the load); false for unknown names and models whose load just failed. The
        REST face answers the same (mmesh.router.dataplane.DataPlane.model_readiness)."""
        try:
            readiness = self.dataplane.model_readiness(request.name)
        except ModelNotFound:
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=readiness.ready)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods = {}
        for name, req in (
            ("ServerLive", v2.ServerLiveRequest),
            ("ServerReady", v2.ServerReadyRequest),
            ("ServerMetadata", v2.ServerMetadataRequest),
            ("ModelReady", v2.ModelReadyRequest),
        ):
            methods[name] = grpc.unary_unary_rpc_method_handler(
                getattr(self, name),
                request_deserializer=req.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        return grpc.method_handlers_generic_handler(V2_SERVICE, methods)


if TYPE_CHECKING:
    _BytesHandler = grpc.GenericRpcHandler[bytes, bytes]
else:  # the stubs make it generic, the runtime class is not
    _BytesHandler = grpc.GenericRpcHandler


class InferenceHandler(_BytesHandler):
    """Every other unary method: routed by model id, forwarded as bytes."""

    def __init__(self, dataplane: DataPlane, *, log_each: bool = False) -> None:
        self.dataplane = dataplane
        self.log_each = log_each
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        method: str = details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = grpc.unary_unary_rpc_method_handler(self._handler(method))
            self._handlers[method] = handler
        return handler

    def _handler(self, method: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
        """The handler of one method: a plain coroutine function, which gRPC recognises at
        once on every call (a functools.partial takes it through inspect's slow path)."""
        invoke, log_each = self.dataplane.invoke, self.log_each

        async def call(payload: bytes, context: Context) -> bytes:
            started, code = time.monotonic() if log_each else 0.0, "OK"
            try:
                headers = dict(context.invocation_metadata() or ())
                return await invoke(method, payload, headers, context.time_remaining())
            except Exception as exc:
                code = exc.grpc_code if isinstance(exc, RouterError) else "INTERNAL"
                await abort_with(context, exc)
                raise AssertionError("unreachable") from exc
            finally:
                if log_each:
                    elapsed_ms = (time.monotonic() - started) * 1000
                    logger.info("%s %s %.1f ms", method, code, elapsed_ms)

        return call


def add_servicers(
    server: grpc.aio.Server,
    *,
    management: Management,
    dataplane: DataPlane,
    ready: Callable[[], bool],
    log_each: bool,
) -> None:
    servicer = ModelMeshServicer(management, dataplane.router.local.instance_id)
    mm_grpc.add_ModelMeshServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers(
        (
            RouterAnswered(dataplane, ready).handler(),
            InferenceHandler(dataplane, log_each=log_each),
        )
    )
