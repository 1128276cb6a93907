"""Pure: InferenceService -> Registration (the vmodel and concrete model to write to etcd).

Rules (reference: modelmesh-serving pkg/predictor_source/inferenceservice_registry.go):

- The predictor is `spec.predictor.model` (modelFormat.name required) or exactly one legacy
  framework spec (`sklearn`, `xgboost`, ...: the format is the framework name and the
  runtime comes from the `serving.kserve.io/servingRuntime` annotation). A model spec
  together with a framework spec, or with that annotation, is invalid.
- Storage is `storageUri` or `storage.path`, not both and not neither. A URI becomes a
  path plus storage parameters (s3/gs/pvc/http(s)/Azure blob); those parameters override
  `storage.parameters`. The storage key is `storage.key`, else the
  `serving.kserve.io/secretKey` annotation; the schema path is `storage.schemaPath`, else
  the `serving.kserve.io/schemaPath` annotation.
- The `serving.kserve.io/minimumCopies` annotation (a whole number, 0 = none) becomes the
  model record's minimum copies; it is not part of the spec hash (changing it reloads
  nothing).
- vmodel id = InferenceService name; concrete model id = `<name>__isvc-<hash>` of the
  translated spec (naming.py); ModelInfo.type is the placement requirement
  (runtime_selection.py); ModelInfo.key is the JSON the adapter parses
  (`storage_key`, `storage_params`, `model_type`, `schema_path`).

Every problem raises `InvalidSpec` (reason InvalidPredictorSpec). The caller has already
checked the deployment-mode annotation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mmesh.core.ids import ModelId, VModelId
from mmesh.core.model_key import ModelKey
from mmesh.operator.errors import FailureReason, InvalidSpec
from mmesh.operator.naming import ISVC_SOURCE, check_isvc_name, concrete_model_id
from mmesh.operator.resources import (
    MIN_COPIES_ANNOTATION,
    SCHEMA_PATH_ANNOTATION,
    SECRET_KEY_ANNOTATION,
    SERVING_RUNTIME_ANNOTATION,
    InferenceService,
    PredictorModel,
)
from mmesh.operator.runtime_selection import UNKNOWN_PROTOCOL, ModelFormat, Requirement

AZURE_BLOB_HOST_SUFFIX = "blob.core.windows.net"
MAX_MIN_COPIES = 1000

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The registration's `ModelInfo`: passed verbatim to the adapter's loadModel."""

    type: str
    path: str
    key: str


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """Where the model is, after URI and annotation rules."""

    path: str
    key: str | None = None
    schema_path: str | None = None
    parameters: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Registration:
    """What the operator registers for one InferenceService."""

    namespace: str
    vmodel_id: VModelId
    model_id: ModelId
    requirement: Requirement
    storage: StorageLocation
    model_info: ModelInfo
    owner: str = ISVC_SOURCE
    """vmodel owner: keeps InferenceServices apart from other sources of the same name."""
    min_copies: int = 0
    """Copies the mesh keeps loaded even when unused (`serving.kserve.io/minimumCopies`)."""


def to_registration(isvc: InferenceService) -> Registration:
    """Translate and validate; raise InvalidSpec (InvalidPredictorSpec) on any problem."""
    check_isvc_name(isvc.name)
    model, runtime = _predictor(isvc)
    requirement = Requirement(_model_format(model), runtime, _protocol(model))
    storage = _storage(isvc, model)
    spec = predictor_spec(requirement, storage)
    return Registration(
        namespace=isvc.namespace,
        vmodel_id=VModelId(isvc.name),
        model_id=concrete_model_id(isvc.name, spec),
        requirement=requirement,
        storage=storage,
        model_info=ModelInfo(
            type=requirement.type_label,
            path=storage.path,
            key=model_key_json(requirement.format, storage),
        ),
        min_copies=_min_copies(isvc),
    )


def _invalid(message: str) -> InvalidSpec:
    return InvalidSpec(FailureReason.INVALID_PREDICTOR_SPEC, message)


def _predictor(isvc: InferenceService) -> tuple[PredictorModel, str | None]:
    """The model spec to use and the runtime it names (from the spec or the annotation)."""
    annotated = isvc.meta.annotations.get(SERVING_RUNTIME_ANNOTATION)
    frameworks = [name for name, _ in isvc.frameworks]
    if isvc.model is not None:
        if frameworks:
            raise _invalid(
                f"the InferenceService {isvc.name} cannot have both the model spec and a "
                f"framework spec ({', '.join(frameworks)})"
            )
        if annotated is not None:
            raise _invalid(
                f"the InferenceService {isvc.name} cannot have both the model spec and the "
                f"runtime annotation {SERVING_RUNTIME_ANNOTATION}"
            )
        return isvc.model, isvc.model.runtime or None
    if not frameworks:
        raise _invalid(
            f"the InferenceService {isvc.name} has no predictor: set spec.predictor.model "
            "(with modelFormat) or a framework spec"
        )
    if len(frameworks) > 1:
        raise _invalid(
            f"the InferenceService {isvc.name} has several framework specs "
            f"({', '.join(frameworks)}); give exactly one"
        )
    return isvc.frameworks[0][1], annotated or None


def _min_copies(isvc: InferenceService) -> int:
    text = isvc.meta.annotations.get(MIN_COPIES_ANNOTATION)
    if text is None:
        return 0
    value = str(text).strip()
    if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) > MAX_MIN_COPIES:
        raise _invalid(
            f"annotation {MIN_COPIES_ANNOTATION} must be a whole number of copies from 0 to "
            f"{MAX_MIN_COPIES}, got {text!r}"
        )
    return int(value)


def _model_format(model: PredictorModel) -> ModelFormat:
    if not model.format_name:
        raise _invalid("spec.predictor.model.modelFormat.name is required")
    return ModelFormat(model.format_name, model.format_version or None)


def _protocol(model: PredictorModel) -> str | None:
    protocol = model.protocol_version
    return None if not protocol or protocol == UNKNOWN_PROTOCOL else protocol


# ---------------------------------------------------------------- storage


def _storage(isvc: InferenceService, model: PredictorModel) -> StorageLocation:
    storage = model.storage
    if model.storage_uri is None:
        if storage is None or storage.path is None:
            raise _invalid(
                f"the InferenceService {isvc.name} must have either the storageUri or the "
                "storage.path"
            )
        path, uri_params = storage.path, dict[str, str]()
    else:
        if storage is not None and storage.path is not None:
            raise _invalid(
                f"the InferenceService {isvc.name} cannot have both the storageUri and the "
                "storage.path"
            )
        path, uri_params = parse_storage_uri(model.storage_uri)
    annotations = isvc.meta.annotations
    base_params = dict(storage.parameters or {}) if storage is not None else {}
    key = storage.key if storage is not None and storage.key is not None else None
    schema = storage.schema_path if storage is not None else None
    return StorageLocation(
        path=path,
        key=key if key is not None else annotations.get(SECRET_KEY_ANNOTATION),
        schema_path=schema if schema is not None else annotations.get(SCHEMA_PATH_ANNOTATION),
        parameters=MappingProxyType(base_params | uri_params),  # URI parameters win
    )


_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(?P<host>[^/?#]*)"
    r"(?P<path>/[^?#]*)?(?:\?[^#]*)?(?:#.*)?"
)


def parse_storage_uri(uri: str) -> tuple[str, dict[str, str]]:
    """(model path, storage parameters) for a storageUri; raise InvalidSpec if unsupported.

    s3://b/p -> (p, {type: s3, bucket: b}); gs://b/p -> (p, {type: gcs, bucket: b});
    pvc://c/p -> (p, {type: pvc, name: c}); https://<acct>.blob.core.windows.net/<ctr>/p ->
    (p, {type: azure, account_name, container}); other http(s) -> ("", {type: http, url}).
    """
    match = _URI.fullmatch(uri.strip())
    if match is None:
        raise _invalid(f"could not parse storageUri {uri!r}: expected <scheme>://<host>/<path>")
    scheme, host = match["scheme"].lower(), match["host"]
    path = _percent_decode(match["path"] or "").lstrip("/")
    if scheme in ("http", "https"):
        if host.split(":")[0].lower().endswith(AZURE_BLOB_HOST_SUFFIX):
            return _azure(uri, host, path)
        if not host:
            raise _invalid(f"storageUri {uri!r} has no host")
        return "", {"type": "http", "url": uri.strip()}
    kinds = {"s3": ("s3", "bucket"), "gs": ("gcs", "bucket"), "pvc": ("pvc", "name")}
    if scheme not in kinds:
        raise _invalid(
            f"unsupported storageUri scheme {scheme!r} in {uri!r} "
            "(supported: s3, gs, pvc, http, https)"
        )
    kind, host_param = kinds[scheme]
    if not host:
        raise _invalid(f"storageUri {uri!r} names no {host_param}")
    return path, {"type": kind, host_param: host}


def _azure(uri: str, host: str, path: str) -> tuple[str, dict[str, str]]:
    container, _, rest = path.partition("/")
    if not container:
        raise _invalid(f"Azure blob storageUri {uri!r} names no container")
    account = host.split(".", 1)[0]
    return rest, {"type": "azure", "account_name": account, "container": container}


def _percent_decode(text: str) -> str:
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode())
    return raw.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- derived documents


def model_key_json(fmt: ModelFormat, storage: StorageLocation) -> str:
    """ModelInfo.key: the modelKey document the adapter reads (core/model_key.py)."""
    return ModelKey(
        storage_key=storage.key,
        storage_params=dict(storage.parameters),
        model_type=_format_doc(fmt),
        schema_path=storage.schema_path,
    ).to_json()


def predictor_spec(requirement: Requirement, storage: StorageLocation) -> dict[str, Any]:
    """The translated predictor spec, the document whose hash names the concrete model."""
    spec: dict[str, Any] = {"modelType": _format_doc(requirement.format)}
    if requirement.runtime:
        spec["runtime"] = {"name": requirement.runtime}
    if requirement.protocol:
        spec["protocolVersion"] = requirement.protocol
    stored: dict[str, Any] = {"path": storage.path, "parameters": dict(storage.parameters)}
    if storage.key is not None:
        stored["storageKey"] = storage.key
    if storage.schema_path is not None:
        stored["schemaPath"] = storage.schema_path
    spec["storage"] = stored
    return spec


def _format_doc(fmt: ModelFormat) -> dict[str, str]:
    doc = {"name": fmt.name}
    if fmt.version:
        doc["version"] = fmt.version
    return doc
