"""Pure: frozen, typed views of the custom resources the operator reads.

kopf hands handlers raw bodies (nested dicts). `InferenceService.from_body`,
`ServingRuntime.from_body` parse them once at the edge: the fields ModelMesh uses are
typed, everything else is ignored, and a field of the wrong type raises (`InvalidSpec`
for InferenceServices, `InvalidRuntime` for runtimes) because kmock and old clusters do
not enforce the CRD schema. Runtime containers and pod fields stay raw JSON (copied) since
they are passed through to the Deployment untouched. Also the annotation keys the reference
reads. Callers: translation, runtime_selection, deployment, the kopf handlers.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mmesh.operator.errors import FailureReason, InvalidRuntime, InvalidSpec

GROUP = "serving.kserve.io"
ISVC_VERSION = "v1beta1"
RUNTIME_VERSION = "v1alpha1"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
"""Only InferenceServices with this annotation set to `ModelMesh` are ours."""
MODELMESH_DEPLOYMENT_MODE = "ModelMesh"
SECRET_KEY_ANNOTATION = "serving.kserve.io/secretKey"
"""Storage-config entry for a `storageUri` (when `storage.key` is not given)."""
SERVING_RUNTIME_ANNOTATION = "serving.kserve.io/servingRuntime"
"""Legacy: the runtime of a framework-spec predictor (`sklearn:` etc.)."""
SCHEMA_PATH_ANNOTATION = "serving.kserve.io/schemaPath"
"""Legacy: the schema path when `storage.schemaPath` is not given."""
MIN_COPIES_ANNOTATION = "serving.kserve.io/minimumCopies"
"""Copies of the model the mesh keeps loaded, used or not (modelmesh-serving #393)."""
MAX_LOADING_CONCURRENCY_ANNOTATION = "maxLoadingConcurrency"
"""Runtime annotation -> the adapter's LOADING_CONCURRENCY."""
PER_MODEL_CONCURRENCY_ANNOTATION = "perModelConcurrencyLimit"
"""Runtime annotation -> the adapter's LIMIT_PER_MODEL_CONCURRENCY."""

FRAMEWORKS = ("xgboost", "lightgbm", "sklearn", "tensorflow", "onnx", "pytorch", "triton", "pmml")
"""Legacy predictor framework specs, in the order the reference looks for them."""

_EMPTY: Mapping[str, str] = MappingProxyType({})

Raw = Mapping[str, Any]


class _BadField(Exception):
    """A field has the wrong type; the message names it."""


def _get(obj: Raw, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int in Python, but never a valid int field in a CR
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _BadField(f"{where}{key} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}
    names |= {list: "a list"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _str(obj: Raw, key: str, where: str) -> str | None:
    value: str | None = _get(obj, key, str, where)
    return value


def _bool(obj: Raw, key: str, where: str) -> bool:
    return bool(_get(obj, key, bool, where))


def _obj(obj: Raw, key: str, where: str) -> Raw:
    value: Raw | None = _get(obj, key, dict, where)
    return value or {}


def _list(obj: Raw, key: str, where: str) -> list[Any]:
    value: list[Any] | None = _get(obj, key, list, where)
    return value or []


def _str_map(obj: Raw, key: str, where: str) -> Mapping[str, str]:
    raw = _obj(obj, key, where)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            raise _BadField(f"{where}{key}.{k} must be a string, got {type(v).__name__}")
        out[str(k)] = v
    return MappingProxyType(out)


def _objects(obj: Raw, key: str, where: str) -> tuple[Raw, ...]:
    items = _list(obj, key, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _BadField(f"{where}{key}[{i}] must be an object, got {type(item).__name__}")
    return tuple(copy.deepcopy(items))


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True, slots=True)
class Meta:
    """The parts of `metadata` the operator uses."""

    name: str
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def from_body(cls, body: Raw) -> Meta:
        meta = _obj(body, "metadata", "")
        name = _str(meta, "name", "metadata.")
        if not name:
            raise _BadField("metadata.name is required")
        return cls(
            name=name,
            namespace=_str(meta, "namespace", "metadata."),
            uid=_str(meta, "uid", "metadata.") or "",
            generation=_get(meta, "generation", int, "metadata.") or 0,
            annotations=_str_map(meta, "annotations", "metadata."),
            labels=_str_map(meta, "labels", "metadata."),
        )


# ---------------------------------------------------------------- InferenceService


@dataclass(frozen=True, slots=True)
class Storage:
    """`spec.predictor.model.storage`."""

    key: str | None = None
    path: str | None = None
    schema_path: str | None = None
    parameters: Mapping[str, str] | None = None

    @classmethod
    def from_raw(cls, raw: Raw, where: str) -> Storage:
        return cls(
            key=_str(raw, "key", where),
            path=_str(raw, "path", where),
            schema_path=_str(raw, "schemaPath", where),
            parameters=_str_map(raw, "parameters", where) if "parameters" in raw else None,
        )


@dataclass(frozen=True, slots=True)
class PredictorModel:
    """`spec.predictor.model`, or a legacy framework spec (`spec.predictor.sklearn` ...).

    For a framework spec `format_name` is the framework and `runtime` is always None (the
    legacy runtime comes from an annotation, see translation).
    """

    format_name: str | None
    format_version: str | None = None
    runtime: str | None = None
    protocol_version: str | None = None
    storage_uri: str | None = None
    storage: Storage | None = None

    @classmethod
    def from_model(cls, raw: Raw) -> PredictorModel:
        where = "spec.predictor.model."
        fmt = _obj(raw, "modelFormat", where)
        return cls(
            format_name=_str(fmt, "name", where + "modelFormat."),
            format_version=_str(fmt, "version", where + "modelFormat."),
            runtime=_str(raw, "runtime", where),
            protocol_version=_str(raw, "protocolVersion", where),
            storage_uri=_str(raw, "storageUri", where),
            storage=_storage(raw, where),
        )

    @classmethod
    def from_framework(cls, framework: str, raw: Raw) -> PredictorModel:
        where = f"spec.predictor.{framework}."
        return cls(
            format_name=framework,
            protocol_version=_str(raw, "protocolVersion", where),
            storage_uri=_str(raw, "storageUri", where),
            storage=_storage(raw, where),
        )


def _storage(raw: Raw, where: str) -> Storage | None:
    if raw.get("storage") is None:
        return None
    return Storage.from_raw(_obj(raw, "storage", where), where + "storage.")


@dataclass(frozen=True, slots=True)
class InferenceService:
    """The ModelMesh-relevant view of a `serving.kserve.io/v1beta1` InferenceService."""

    meta: Meta
    model: PredictorModel | None
    """`spec.predictor.model`, if present."""
    frameworks: tuple[tuple[str, PredictorModel], ...] = ()
    """Every legacy framework spec present, as (framework, spec), in FRAMEWORKS order."""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace or ""

    @property
    def is_modelmesh(self) -> bool:
        """True iff the deployment-mode annotation says ModelMesh (else KServe owns it)."""
        return self.meta.annotations.get(DEPLOYMENT_MODE_ANNOTATION) == MODELMESH_DEPLOYMENT_MODE

    @classmethod
    def from_body(cls, body: Raw) -> InferenceService:
        """Parse a raw body; a field of the wrong type raises InvalidSpec."""
        try:
            return cls._parse(body)
        except _BadField as exc:
            raise InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, str(exc)) from None

    @classmethod
    def _parse(cls, body: Raw) -> InferenceService:
        predictor = _obj(_obj(body, "spec", ""), "predictor", "spec.")
        model_raw = _get(predictor, "model", dict, "spec.predictor.")
        frameworks = tuple(
            (fw, PredictorModel.from_framework(fw, _obj(predictor, fw, "spec.predictor.")))
            for fw in FRAMEWORKS
            if predictor.get(fw) is not None
        )
        return cls(
            meta=Meta.from_body(body),
            model=None if model_raw is None else PredictorModel.from_model(model_raw),
            frameworks=frameworks,
        )


# ---------------------------------------------------------------- runtimes


class RuntimeKind(enum.StrEnum):
    SERVING_RUNTIME = "ServingRuntime"
    CLUSTER_SERVING_RUNTIME = "ClusterServingRuntime"


@dataclass(frozen=True, slots=True)
class SupportedFormat:
    """One `spec.supportedModelFormats[]` entry."""

    name: str
    version: str | None = None
    auto_select: bool = False
    priority: int | None = None
    """Read for completeness; ModelMesh ignores it (a KServe single-model feature)."""


@dataclass(frozen=True, slots=True)
class BuiltInAdapter:
    """`spec.builtInAdapter`: run mmesh's adapter in front of a known model server."""

    server_type: str
    runtime_management_port: int | None = None
    mem_buffer_bytes: int | None = None
    model_loading_timeout_millis: int | None = None
    env: tuple[Raw, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A `grpcEndpoint`/`grpcDataEndpoint`: `port:N` or `unix:/path`."""

    port: int | None = None
    socket_path: str | None = None

    @classmethod
    def parse(cls, raw: str, what: str) -> Endpoint:
        scheme, _, rest = raw.partition(":")
        if scheme == "port" and rest.isdigit() and 0 < int(rest) < 65536:
            return cls(port=int(rest))
        if scheme == "unix" and rest.startswith("/"):
            return cls(socket_path=rest)
        raise _BadField(f"{what} must be 'port:<1-65535>' or 'unix:/<path>', got {raw!r}")


@dataclass(frozen=True, slots=True)
class ServingRuntime:
    """A ServingRuntime (namespaced) or ClusterServingRuntime, as ModelMesh reads it."""

    meta: Meta
    kind: RuntimeKind = RuntimeKind.SERVING_RUNTIME
    supported_formats: tuple[SupportedFormat, ...] = ()
    protocol_versions: tuple[str, ...] = ()
    multi_model: bool = False
    disabled: bool = False
    grpc_endpoint: Endpoint | None = None
    grpc_data_endpoint: Endpoint | None = None
    containers: tuple[Raw, ...] = ()
    built_in_adapter: BuiltInAdapter | None = None
    storage_helper_disabled: bool = False
    replicas: int | None = None
    node_selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    affinity: Raw | None = None
    tolerations: tuple[Raw, ...] = ()
    image_pull_secrets: tuple[Raw, ...] = ()
    volumes: tuple[Raw, ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """`spec.labels`: added to the runtime's pods."""
    pod_annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """`spec.annotations`: added to the runtime's pods."""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def is_cluster_scoped(self) -> bool:
        return self.kind is RuntimeKind.CLUSTER_SERVING_RUNTIME

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{RUNTIME_VERSION}"

    @classmethod
    def from_body(cls, body: Raw, kind: RuntimeKind | None = None) -> ServingRuntime:
        """Parse a raw body (kind from the body unless given); bad fields raise InvalidRuntime."""
        name = str(_obj(body, "metadata", "").get("name") or "<unnamed>")
        try:
            return cls._parse(body, kind)
        except _BadField as exc:
            raise InvalidRuntime(name, str(exc)) from None

    @classmethod
    def _parse(cls, body: Raw, kind: RuntimeKind | None) -> ServingRuntime:
        spec = _obj(body, "spec", "")
        w = "spec."
        return cls(
            meta=Meta.from_body(body),
            kind=kind or _runtime_kind(body),
            supported_formats=tuple(_format(f, i) for i, f in enumerate(_objects(spec, _SMF, w))),
            protocol_versions=tuple(_strings(spec, "protocolVersions", w)),
            multi_model=_bool(spec, "multiModel", w),
            disabled=_bool(spec, "disabled", w),
            grpc_endpoint=_endpoint(spec, "grpcEndpoint"),
            grpc_data_endpoint=_endpoint(spec, "grpcDataEndpoint"),
            containers=_containers(spec),
            built_in_adapter=_adapter(spec),
            storage_helper_disabled=_bool(_obj(spec, "storageHelper", w), "disabled", w),
            replicas=_non_negative(spec, "replicas", w),
            node_selector=_str_map(spec, "nodeSelector", w),
            affinity=copy.deepcopy(_get(spec, "affinity", dict, w)),
            tolerations=_objects(spec, "tolerations", w),
            image_pull_secrets=_objects(spec, "imagePullSecrets", w),
            volumes=_objects(spec, "volumes", w),
            pod_labels=_str_map(spec, "labels", w),
            pod_annotations=_str_map(spec, "annotations", w),
        )


_SMF = "supportedModelFormats"


def _runtime_kind(body: Raw) -> RuntimeKind:
    kind = body.get("kind") or RuntimeKind.SERVING_RUNTIME.value
    try:
        return RuntimeKind(kind)
    except ValueError:
        raise _BadField(
            f"kind must be ServingRuntime or ClusterServingRuntime, got {kind!r}"
        ) from None


def _strings(obj: Raw, key: str, where: str) -> list[str]:
    items = _list(obj, key, where)
    if not all(isinstance(s, str) for s in items):
        raise _BadField(f"{where}{key} must be a list of strings")
    return items


def _non_negative(obj: Raw, key: str, where: str) -> int | None:
    value: int | None = _get(obj, key, int, where)
    if value is not None and value < 0:
        raise _BadField(f"{where}{key} must not be negative, got {value}")
    return value


def _format(raw: Raw, index: int) -> SupportedFormat:
    where = f"spec.{_SMF}[{index}]."
    name = _str(raw, "name", where)
    if not name:
        raise _BadField(f"{where}name is required")
    return SupportedFormat(
        name=name,
        version=_str(raw, "version", where),
        auto_select=_bool(raw, "autoSelect", where),
        priority=_get(raw, "priority", int, where),
    )


def _endpoint(spec: Raw, key: str) -> Endpoint | None:
    raw = _str(spec, key, "spec.")
    return None if raw is None else Endpoint.parse(raw, f"spec.{key}")


def _containers(spec: Raw) -> tuple[Raw, ...]:
    containers = _objects(spec, "containers", "spec.")
    for i, container in enumerate(containers):
        if not isinstance(container.get("name"), str) or not container["name"]:
            raise _BadField(f"spec.containers[{i}].name is required")
    return containers


def _adapter(spec: Raw) -> BuiltInAdapter | None:
    raw = _get(spec, "builtInAdapter", dict, "spec.")
    if raw is None:
        return None
    where = "spec.builtInAdapter."
    server_type = _str(raw, "serverType", where)
    if not server_type:
        raise _BadField(f"{where}serverType is required")
    return BuiltInAdapter(
        server_type=server_type,
        runtime_management_port=_non_negative(raw, "runtimeManagementPort", where),
        mem_buffer_bytes=_non_negative(raw, "memBufferBytes", where),
        model_loading_timeout_millis=_non_negative(raw, "modelLoadingTimeoutMillis", where),
        env=_objects(raw, "env", where),
    )


# ---------------------------------------------------------------- object references


@dataclass(frozen=True, slots=True)
class OwnerReference:
    """An ownerReferences entry: the owner's deletion garbage-collects the dependent."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = True
    block_owner_deletion: bool = True

    def to_manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": self.controller,
            "blockOwnerDeletion": self.block_owner_deletion,
        }

    @classmethod
    def of_runtime(cls, runtime: ServingRuntime) -> OwnerReference:
        return cls(runtime.api_version, runtime.kind.value, runtime.name, runtime.meta.uid)
