"""What the router raises, and the gRPC status each error reaches clients with.

    RouterError(MeshError)
      ModelNotFound          unknown model or vmodel id                      -> NOT_FOUND
      InvalidRequest         bad headers, malformed bytes, bad registration  -> INVALID_ARGUMENT
      AlreadyExists          same id registered with other attributes; owner -> ALREADY_EXISTS
      HasReferents           model still referenced by a vmodel; CAS lost    -> FAILED_PRECONDITION
      NoCapacity             nowhere to place the model, even after eviction -> RESOURCE_EXHAUSTED
      TooManyRequests        the model's in-flight bound here is reached     -> RESOURCE_EXHAUSTED
      LoadFailed             the runtime failed to load the model            -> INTERNAL
      ModelNotHere           the copy vanished; retry elsewhere (internal)   -> UNAVAILABLE
        CopyNotHeld          a peer's claimed copy is not there (stale claim) -> UNAVAILABLE
      RuntimeUnavailable     the local runtime or a peer does not answer     -> UNAVAILABLE
      RegistryUnavailable    etcd does not answer, so no copy can be claimed -> UNAVAILABLE
      Unimplemented          streaming, or a method the runtime does not allow -> UNIMPLEMENTED
      RequestTimeout         the request's deadline passed while it waited   -> DEADLINE_EXCEEDED
      ShuttingDown           this router is stopping                         -> UNAVAILABLE

`grpc_code` names a `grpc.StatusCode` member; `http_status` is what the REST face answers.
A status passed through from a runtime keeps the runtime's own code (`Passthrough`).
`checked_model_id` / `checked_vmodel_id` apply the id rules of `mmesh.core.ids` to what a
client sent, as InvalidRequest.
"""

from __future__ import annotations

from mmesh.core.errors import MeshError
from mmesh.core.ids import InvalidIdError, ModelId, VModelId, parse_model_id, parse_vmodel_id


class RouterError(MeshError):
    grpc_code = "INTERNAL"
    http_status = 500


class ModelNotFound(RouterError):
    grpc_code = "NOT_FOUND"
    http_status = 404


class InvalidRequest(RouterError):
    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class AlreadyExists(RouterError):
    grpc_code = "ALREADY_EXISTS"
    http_status = 409


class HasReferents(RouterError):
    grpc_code = "FAILED_PRECONDITION"
    http_status = 409


class NoCapacity(RouterError):
    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 503


class TooManyRequests(RouterError):
    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429


class LoadFailed(RouterError):
    grpc_code = "INTERNAL"
    http_status = 500


class ModelNotHere(RouterError):
    grpc_code = "UNAVAILABLE"
    http_status = 503


class CopyNotHeld(ModelNotHere):
    """A forwarded request reached the instance the registry names as a holder, and that
    instance holds no copy: its claim is stale and the sender removes it."""


class RuntimeUnavailable(RouterError):
    grpc_code = "UNAVAILABLE"
    http_status = 503


class RegistryUnavailable(RouterError):
    """A load could not be recorded in the registry (etcd is away). Not the model's fault
    nor the instance's: not recorded as a load failure, not retried on other instances."""

    grpc_code = "UNAVAILABLE"
    http_status = 503


class Unimplemented(RouterError):
    grpc_code = "UNIMPLEMENTED"
    http_status = 501


class RequestTimeout(RouterError):
    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504


class ShuttingDown(RouterError):
    grpc_code = "UNAVAILABLE"
    http_status = 503


class Passthrough(RouterError):
    """A runtime's own error status, handed to the client unchanged."""

    def __init__(self, grpc_code: str, message: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.http_status = _HTTP_FOR_GRPC.get(grpc_code, 500)


_HTTP_FOR_GRPC = {
    "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 400, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501, "DEADLINE_EXCEEDED": 504, "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401, "OUT_OF_RANGE": 400, "CANCELLED": 499,
}  # fmt: skip


def checked_model_id(raw: str) -> ModelId:
    """`raw` as a model id, or InvalidRequest (INVALID_ARGUMENT) naming the rule it breaks."""
    try:
        return parse_model_id(raw)
    except InvalidIdError as exc:
        raise InvalidRequest(str(exc)) from None


def checked_vmodel_id(raw: str) -> VModelId:
    """`raw` as a vmodel id, or InvalidRequest (INVALID_ARGUMENT) naming the rule it breaks."""
    try:
        return parse_vmodel_id(raw)
    except InvalidIdError as exc:
        raise InvalidRequest(str(exc)) from None
