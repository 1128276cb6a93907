"""What the operator's decision modules raise, and the failure vocabulary users see.

    OperatorError(MeshError)
      InvalidSpec              an InferenceService cannot be served as written; `reason` is a
                               FailureReason and ends up in status.modelStatus.lastFailureInfo
        RuntimeNotRecognized   the predictor names a runtime that does not exist (or is off)
        NoSupportingRuntime    no enabled runtime supports the model's format and protocol
      InvalidRuntime           a ServingRuntime / ClusterServingRuntime body cannot be rendered
      InvalidConfig            the user's model-serving-config ConfigMap is rejected; the
                               previous configuration stays in force

The kopf handlers catch each where it arises and never retry it (retrying cannot help):
InvalidSpec is logged, posted as a Warning Event with its reason and shown in the
InferenceService status; InvalidRuntime is logged and that runtime left as it is;
InvalidConfig is logged and posted as a Warning Event on the ConfigMap, the previous
configuration staying in force. None of them crashes or restarts the operator.
"""

from __future__ import annotations

import enum

from mmesh.core.errors import MeshError


class FailureReason(enum.StrEnum):
    """`lastFailureInfo.reason` values; the strings are the reference CRD's enum."""

    MODEL_LOAD_FAILED = "ModelLoadFailed"
    RUNTIME_UNHEALTHY = "RuntimeUnhealthy"
    RUNTIME_DISABLED = "RuntimeDisabled"
    NO_SUPPORTING_RUNTIME = "NoSupportingRuntime"
    RUNTIME_NOT_RECOGNIZED = "RuntimeNotRecognized"
    INVALID_PREDICTOR_SPEC = "InvalidPredictorSpec"


class OperatorError(MeshError):
    """Root of the operator's own errors."""


class InvalidSpec(OperatorError):
    """An InferenceService predictor that cannot be registered or placed."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RuntimeNotRecognized(InvalidSpec):
    """The predictor asks for a runtime that is not there."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureReason.RUNTIME_NOT_RECOGNIZED, message)


class NoSupportingRuntime(InvalidSpec):
    """No runtime carries every label the model requires."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureReason.NO_SUPPORTING_RUNTIME, message)


class InvalidRuntime(OperatorError):
    """A runtime resource is malformed or names things the operator cannot build."""

    def __init__(self, runtime: str, message: str) -> None:
        super().__init__(f"runtime {runtime}: {message}")
        self.runtime = runtime
        self.message = message


class InvalidConfig(OperatorError):
    """The user ConfigMap does not parse or does not validate."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid model-serving-config: {message}")
        self.message = message


class KubeUnavailable(OperatorError):
    """The Kubernetes API did not take a write (timeout, connection, 5xx, conflict)."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"{what}: the Kubernetes API did not answer ({cause})")
        self.message = str(self)
