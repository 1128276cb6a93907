"""Pure: frozen, typed views of the custom resources the operator reads.

kopf hands handlers raw bodies (nested dicts). `InferenceService.from_body`,
`ServingRuntime.from_body` parse them once at the edge with frozen pydantic models (camelCase
aliases of the CRD fields): the fields ModelMesh uses are typed, everything else is ignored,
and a field of the wrong type raises (`InvalidSpec` for InferenceServices, `InvalidRuntime`
for runtimes, the message naming the field as `spec.containers[0].name`) because kmock and
old clusters do not enforce the CRD schema. Runtime containers and pod fields stay raw JSON
(copied) since they are passed through to the Deployment untouched. Also the annotation keys
the reference reads. Callers: translation, runtime_selection, deployment, the kopf handlers.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from mmesh.core.numbers import whole_number
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


class _Frozen(BaseModel):
    """A view of part of a custom resource: frozen, CRD field names as camelCase aliases."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        protected_namespaces=(),
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # A `key: null` (or a bare `key:` in YAML) means the field is not set.
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None}
        return data


def _read_only(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _named(container: Raw) -> Raw:
    name = container.get("name")
    if not isinstance(name, str) or not name:
        raise PydanticCustomError("required_field", "name is required", {"field": "name"})
    return container


StrMap = Annotated[Mapping[StrictStr, StrictStr], AfterValidator(_read_only)]
"""A string -> string object (labels, annotations, nodeSelector), read-only."""
RawObject = Annotated[Mapping[str, Any], AfterValidator(copy.deepcopy)]
"""Passed through to a manifest untouched: copied, so the view does not alias the body."""
Container = Annotated[RawObject, AfterValidator(_named)]
NonNegative = Annotated[StrictInt, Field(ge=0)]
Name = Annotated[StrictStr, Field(min_length=1)]


def _empty_map() -> Mapping[str, str]:
    return _EMPTY


_KINDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "mapping_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _problems(exc: ValidationError, *, spec_fields: bool = False) -> str:
    """Every problem pydantic found, each naming its field as the CRD spells it
    (`spec.containers[0].name`); `spec_fields`: a location outside metadata/kind is in spec."""
    return "; ".join(_problem(error, spec_fields) for error in exc.errors(include_url=False))


def _problem(error: ErrorDetails, spec_fields: bool) -> str:
    loc = list(error["loc"])
    if spec_fields and loc and loc[0] not in ("metadata", "kind"):
        loc.insert(0, "spec")
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    where, kind, got = where.lstrip("."), error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _KINDS:
        return f"{where} must be {_KINDS[kind]}, got {type(got).__name__}"
    if kind in ("missing", "string_too_short"):
        return f"{where} is required"
    if kind == "required_field":
        return f"{where}.{ctx['field']} is required"
    if kind == "greater_than_equal":
        return f"{where} must not be negative, got {got}"
    if kind == "enum":
        return f"{where} must be {ctx['expected']}, got {got!r}"
    return f"{where} {error['msg']}"


# ---------------------------------------------------------------- metadata


class Meta(_Frozen):
    """The parts of `metadata` the operator uses."""

    name: Name
    namespace: StrictStr | None = None
    uid: StrictStr = ""
    generation: StrictInt = 0
    annotations: StrMap = Field(default_factory=_empty_map)
    labels: StrMap = Field(default_factory=_empty_map)


# ---------------------------------------------------------------- InferenceService


class Storage(_Frozen):
    """`spec.predictor.model.storage`."""

    key: StrictStr | None = None
    path: StrictStr | None = None
    schema_path: StrictStr | None = None
    parameters: StrMap | None = None


class PredictorModel(_Frozen):
    """`spec.predictor.model`, or a legacy framework spec (`spec.predictor.sklearn` ...).

    For a framework spec `format_name` is the framework and `runtime` is always None (the
    legacy runtime comes from an annotation, see translation).
    """

    format_name: StrictStr | None = None
    format_version: StrictStr | None = None
    runtime: StrictStr | None = None
    protocol_version: StrictStr | None = None
    storage_uri: StrictStr | None = None
    storage: Storage | None = None


class _FrameworkSpec(_Frozen):
    protocol_version: StrictStr | None = None
    storage_uri: StrictStr | None = None
    storage: Storage | None = None


class _ModelFormat(_Frozen):
    name: StrictStr | None = None
    version: StrictStr | None = None


class _ModelSpec(_FrameworkSpec):
    model_format: _ModelFormat = _ModelFormat()
    runtime: StrictStr | None = None


class _Predictor(_Frozen):
    model: _ModelSpec | None = None
    xgboost: _FrameworkSpec | None = None
    lightgbm: _FrameworkSpec | None = None
    sklearn: _FrameworkSpec | None = None
    tensorflow: _FrameworkSpec | None = None
    onnx: _FrameworkSpec | None = None
    pytorch: _FrameworkSpec | None = None
    triton: _FrameworkSpec | None = None
    pmml: _FrameworkSpec | None = None

    def frameworks(self) -> tuple[tuple[str, PredictorModel], ...]:
        """Every framework spec present, as (framework, spec), in FRAMEWORKS order."""
        found = ((fw, getattr(self, fw)) for fw in FRAMEWORKS)
        return tuple(
            (
                fw,
                PredictorModel(
                    format_name=fw,
                    protocol_version=spec.protocol_version,
                    storage_uri=spec.storage_uri,
                    storage=spec.storage,
                ),
            )
            for fw, spec in found
            if spec is not None
        )


class _IsvcSpec(_Frozen):
    predictor: _Predictor = _Predictor()


class _IsvcBody(_Frozen):
    metadata: Meta
    spec: _IsvcSpec = _IsvcSpec()


class InferenceService(_Frozen):
    """The ModelMesh-relevant view of a `serving.kserve.io/v1beta1` InferenceService."""

    meta: Meta
    model: PredictorModel | None = None
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
            parsed = _IsvcBody.model_validate(body)
        except ValidationError as exc:
            raise InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, _problems(exc)) from None
        predictor = parsed.spec.predictor
        return cls(
            meta=parsed.metadata, model=_model(predictor.model), frameworks=predictor.frameworks()
        )


def _model(spec: _ModelSpec | None) -> PredictorModel | None:
    if spec is None:
        return None
    return PredictorModel(
        format_name=spec.model_format.name,
        format_version=spec.model_format.version,
        runtime=spec.runtime,
        protocol_version=spec.protocol_version,
        storage_uri=spec.storage_uri,
        storage=spec.storage,
    )


# ---------------------------------------------------------------- runtimes


class RuntimeKind(enum.StrEnum):
    SERVING_RUNTIME = "ServingRuntime"
    CLUSTER_SERVING_RUNTIME = "ClusterServingRuntime"


class SupportedFormat(_Frozen):
    """One `spec.supportedModelFormats[]` entry."""

    name: Name
    version: StrictStr | None = None
    auto_select: StrictBool = False
    priority: StrictInt | None = None
    """Read for completeness; ModelMesh ignores it (a KServe single-model feature)."""


class BuiltInAdapter(_Frozen):
    """`spec.builtInAdapter`: run mmesh's adapter in front of a known model server."""

    server_type: Name
    runtime_management_port: NonNegative | None = None
    mem_buffer_bytes: NonNegative | None = None
    model_loading_timeout_millis: NonNegative | None = None
    env: tuple[RawObject, ...] = ()


class Endpoint(_Frozen):
    """A `grpcEndpoint`/`grpcDataEndpoint`: `port:N` or `unix:/path`."""

    port: int | None = None
    socket_path: str | None = None


def _endpoint(value: object) -> object:
    if value is None or isinstance(value, Endpoint):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be a string")
    scheme, _, rest = value.partition(":")
    port = whole_number(rest) if scheme == "port" else None
    if port is not None and 0 < port < 65536:
        return Endpoint(port=port)
    if scheme == "unix" and rest.startswith("/"):
        return Endpoint(socket_path=rest)
    raise PydanticCustomError(
        "endpoint", "must be 'port:<1-65535>' or 'unix:/<path>', got {got}", {"got": repr(value)}
    )


EndpointText = Annotated[Endpoint | None, BeforeValidator(_endpoint)]


class _StorageHelper(_Frozen):
    disabled: StrictBool = False


class _RuntimeBody(_Frozen):
    kind: Annotated[RuntimeKind | None, BeforeValidator(lambda v: v or None)] = None
    metadata: Mapping[str, Any] = Field(default_factory=dict)
    spec: Mapping[str, Any] = Field(default_factory=dict)


class ServingRuntime(_Frozen):
    """A ServingRuntime (namespaced) or ClusterServingRuntime, as ModelMesh reads it.

    Its fields are `spec`'s (camelCase aliases), plus `metadata` and the kind.
    """

    meta: Meta = Field(alias="metadata")
    kind: RuntimeKind = RuntimeKind.SERVING_RUNTIME
    supported_formats: tuple[SupportedFormat, ...] = Field((), alias="supportedModelFormats")
    protocol_versions: tuple[StrictStr, ...] = ()
    multi_model: StrictBool = False
    disabled: StrictBool = False
    grpc_endpoint: EndpointText = None
    grpc_data_endpoint: EndpointText = None
    containers: tuple[Container, ...] = ()
    built_in_adapter: BuiltInAdapter | None = None
    storage_helper: _StorageHelper = _StorageHelper()
    replicas: NonNegative | None = None
    node_selector: StrMap = Field(default_factory=_empty_map)
    affinity: RawObject | None = None
    tolerations: tuple[RawObject, ...] = ()
    image_pull_secrets: tuple[RawObject, ...] = ()
    volumes: tuple[RawObject, ...] = ()
    pod_labels: StrMap = Field(default_factory=_empty_map, alias="labels")
    """`spec.labels`: added to the runtime's pods."""
    pod_annotations: StrMap = Field(default_factory=_empty_map, alias="annotations")
    """`spec.annotations`: added to the runtime's pods."""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def storage_helper_disabled(self) -> bool:
        return self.storage_helper.disabled

    @property
    def is_cluster_scoped(self) -> bool:
        return self.kind is RuntimeKind.CLUSTER_SERVING_RUNTIME

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{RUNTIME_VERSION}"

    @classmethod
    def from_body(cls, body: Raw, kind: RuntimeKind | None = None) -> ServingRuntime:
        """Parse a raw body (kind from the body unless given); bad fields raise InvalidRuntime."""
        meta = body.get("metadata")
        name = str((meta.get("name") if isinstance(meta, Mapping) else None) or "<unnamed>")
        try:
            outer = _RuntimeBody.model_validate(body)
        except ValidationError as exc:
            raise InvalidRuntime(name, _problems(exc)) from None
        fields = {**outer.spec, "metadata": outer.metadata, "kind": kind or outer.kind}
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise InvalidRuntime(name, _problems(exc, spec_fields=True)) from None


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
