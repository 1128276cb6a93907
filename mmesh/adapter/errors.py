"""What the runtime adapter raises, and the gRPC status each error reaches the router with.

    AdapterError(MeshError)
      InvalidModelRequest     bad modelKey, empty id, path escaping the root -> INVALID_ARGUMENT
      UnsupportedModelType    no model server implementation for the type -> INVALID_ARGUMENT
      StorageError            any failure to fetch model files -> UNKNOWN
        UnknownStorageKey     the storage key names no entry in storage-config -> INVALID_ARGUMENT
        UnsupportedStorage    unknown storage type or bad storage params -> INVALID_ARGUMENT
        StorageNotFound       bucket, object, prefix, file or URL does not exist -> NOT_FOUND
        StorageDenied         credentials rejected -> PERMISSION_DENIED
        StorageUnreachable    endpoint down, DNS, TLS failure, connection reset -> UNAVAILABLE
      ModelLoadFailed         the model server refused or failed to load the files -> INTERNAL
      LoadTimeout             the load did not finish within LOADTIME_TIMEOUT -> DEADLINE_EXCEEDED
      RuntimeUnavailable      the model server is not reachable -> UNAVAILABLE
      ModelNotLoaded          asked for the size of a model that is not loaded -> NOT_FOUND
      RuntimeCallFailed       puller: the custom runtime refused a call -> the runtime's own code

Each class names its status in `grpc_code` (a `grpc.StatusCode` member name) so this module
needs no gRPC import; `servicer.py` turns it into the wire status once.
"""

from __future__ import annotations

from mmesh.core.errors import MeshError


class AdapterError(MeshError):
    grpc_code = "INTERNAL"


class InvalidModelRequest(AdapterError):
    grpc_code = "INVALID_ARGUMENT"


class UnsupportedModelType(AdapterError):
    grpc_code = "INVALID_ARGUMENT"


class StorageError(AdapterError):
    grpc_code = "UNKNOWN"


class UnknownStorageKey(StorageError):
    grpc_code = "INVALID_ARGUMENT"


class UnsupportedStorage(StorageError):
    grpc_code = "INVALID_ARGUMENT"


class StorageNotFound(StorageError):
    grpc_code = "NOT_FOUND"


class StorageDenied(StorageError):
    grpc_code = "PERMISSION_DENIED"


class StorageUnreachable(StorageError):
    grpc_code = "UNAVAILABLE"


class ModelLoadFailed(AdapterError):
    grpc_code = "INTERNAL"


class LoadTimeout(AdapterError):
    grpc_code = "DEADLINE_EXCEEDED"


class RuntimeUnavailable(AdapterError):
    grpc_code = "UNAVAILABLE"


class ModelNotLoaded(AdapterError):
    grpc_code = "NOT_FOUND"


class RuntimeCallFailed(AdapterError):
    """The custom runtime behind the puller answered with an error; its code passes through."""

    def __init__(self, message: str, grpc_code: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
