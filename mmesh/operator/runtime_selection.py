"""Pure: which runtimes can host a model, decided by placement labels.

The operator does not pin a model to a runtime; like the reference it turns runtimes and
models into label strings and the mesh places each model on a pod whose labels satisfy the
model's requirement (reference: modelmesh-serving controllers/modelmesh/model_type_labels.go
and servingruntime_controller.go runtimeSupportsPredictor).

- A runtime's labels (its router's MM_LABELS): `mt:<format>` and `mt:<format>:<version>`
  for each supported format with `autoSelect: true`, `pv:<protocol>` for each protocol
  version (plus `pv:v2` for `grpc-v2` when the REST face is on), and `rt:<runtime name>`.
- A model's type (ModelInfo.type): `rt:<runtime>` when it names a runtime, else
  `mt:<format>[:<version>]`, followed by `|pv:<protocol>` when it names a protocol. Its
  requirement is the set of `|`-separated labels.
- A runtime supports a model iff it is enabled (multiModel and not disabled) and its
  labels include every label of the model's requirement.

Callers: translation (model type), deployment (MM_LABELS), the kopf handlers (status and
scale-to-zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mmesh.core.labels import (
    MODEL_TYPE_PREFIX,
    PROTOCOL_PREFIX,
    RUNTIME_PREFIX,
    model_type,
    required_labels,
)
from mmesh.operator.errors import InvalidSpec, NoSupportingRuntime, RuntimeNotRecognized
from mmesh.operator.resources import ServingRuntime

GRPC_V2 = "grpc-v2"
REST_V2 = "v2"
UNKNOWN_PROTOCOL = "unknown"
"""KServe's 'no protocol given' value; ignored like an absent protocol."""


@dataclass(frozen=True, slots=True)
class ModelFormat:
    name: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a model asks of a runtime; `type_label` is its ModelInfo.type."""

    format: ModelFormat
    runtime: str | None = None
    protocol: str | None = None

    @property
    def type_label(self) -> str:
        return model_type(
            self.format.name, self.format.version, runtime=self.runtime, protocol=self.protocol
        )

    @property
    def labels(self) -> frozenset[str]:
        """Every label a runtime must carry to host the model."""
        return required_labels(self.type_label)


def runtime_labels(runtime: ServingRuntime, *, rest_enabled: bool) -> frozenset[str]:
    """The placement labels the runtime's pods advertise."""
    labels = {RUNTIME_PREFIX + runtime.name}
    for fmt in runtime.supported_formats:
        if not fmt.auto_select:
            continue  # only auto-selectable formats make a runtime a candidate by type
        labels.add(MODEL_TYPE_PREFIX + fmt.name)
        if fmt.version:
            labels.add(f"{MODEL_TYPE_PREFIX}{fmt.name}:{fmt.version}")
    for protocol in runtime.protocol_versions:
        labels.add(PROTOCOL_PREFIX + protocol)
        if protocol == GRPC_V2 and rest_enabled:
            # the REST face translates V2 REST to V2 gRPC, so grpc-v2 runtimes also speak v2
            labels.add(PROTOCOL_PREFIX + REST_V2)
    return frozenset(labels)


def mm_labels_value(labels: Iterable[str]) -> str:
    """MM_LABELS: the labels sorted and comma-joined (stable, so pods don't roll needlessly)."""
    return ",".join(sorted(labels))


def is_enabled(runtime: ServingRuntime) -> bool:
    """ModelMesh serves a runtime only if it is multi-model and not disabled."""
    return runtime.multi_model and not runtime.disabled


def effective_runtimes(runtimes: Iterable[ServingRuntime]) -> tuple[ServingRuntime, ...]:
    """The runtimes of one namespace: a ServingRuntime hides a ClusterServingRuntime of the
    same name. Sorted by name."""
    chosen: dict[str, ServingRuntime] = {}
    for runtime in runtimes:
        current = chosen.get(runtime.name)
        if current is None or (current.is_cluster_scoped and not runtime.is_cluster_scoped):
            chosen[runtime.name] = runtime
    return tuple(chosen[name] for name in sorted(chosen))


def supports(runtime: ServingRuntime, requirement: Requirement, *, rest_enabled: bool) -> bool:
    """True iff the runtime is enabled and carries every label the model requires."""
    if not is_enabled(runtime):
        return False
    return requirement.labels <= runtime_labels(runtime, rest_enabled=rest_enabled)


def supporting_runtimes(
    requirement: Requirement,
    runtimes: Iterable[ServingRuntime],
    *,
    rest_enabled: bool = True,
) -> tuple[ServingRuntime, ...]:
    """Every runtime of the namespace that can host the model (the mesh spreads its copies
    over all of them); raise `unsupported`'s reason when there is none."""
    found = _supporting(requirement, runtimes, rest_enabled=rest_enabled)
    if found:
        return found
    raise _no_runtime(requirement)


def unsupported(
    requirement: Requirement,
    runtimes: Iterable[ServingRuntime],
    *,
    rest_enabled: bool = True,
) -> InvalidSpec | None:
    """Why no runtime of the namespace can host the model; None when one can.

    A named runtime that does not exist or is not enabled is RuntimeNotRecognized;
    otherwise no match is NoSupportingRuntime.
    """
    if _supporting(requirement, runtimes, rest_enabled=rest_enabled):
        return None
    return _no_runtime(requirement)


def _supporting(
    requirement: Requirement, runtimes: Iterable[ServingRuntime], *, rest_enabled: bool
) -> tuple[ServingRuntime, ...]:
    candidates = effective_runtimes(runtimes)
    return tuple(r for r in candidates if supports(r, requirement, rest_enabled=rest_enabled))


def _no_runtime(requirement: Requirement) -> InvalidSpec:
    if requirement.runtime:
        return RuntimeNotRecognized(
            f"Specified runtime name not recognized: {requirement.runtime!r} is not an enabled "
            "multi-model ServingRuntime or ClusterServingRuntime in this namespace"
        )
    return NoSupportingRuntime(
        "No ServingRuntime supports specified model type and/or protocol "
        f"(requires {', '.join(sorted(requirement.labels))})"
    )


def runtime_has_models(
    runtime: ServingRuntime, requirements: Sequence[Requirement], *, rest_enabled: bool
) -> bool:
    """Whether any model of the namespace could be placed on `runtime` (scale-to-zero)."""
    return any(supports(runtime, r, rest_enabled=rest_enabled) for r in requirements)
