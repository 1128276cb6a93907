"""Pure: the cluster-level `model-serving-config`, merged over the shipped defaults.

`merge_config(defaults_yaml, user_yaml)` parses both YAML texts, matches keys
case-insensitively (the reference reads them through viper, which lowercases keys), merges
the user's mapping over the defaults key by key (nested sections merge, lists and scalars
replace) and validates the result as a frozen `ServingConfig`. Unknown keys and wrong types
raise `InvalidConfig` naming every problem, so a typo in the ConfigMap is reported instead
of ignored. The defaults ship as `config_defaults.yaml` beside this module; the shell reads
it (importlib.resources) and calls `merge_config` on every ConfigMap change.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mmesh.core.mappings import deep_merge
from mmesh.operator.errors import InvalidConfig

DEFAULTS_FILE = "config_defaults.yaml"
"""Package data file (in mmesh.operator) holding the defaults."""


def _quantity(value: object) -> object:
    # YAML reads `cpu: 3` as an int; Kubernetes quantities are strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[str, BeforeValidator(_quantity)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ImageConfig(_Section):
    """An image reference: `name[:tag]`, or `name@digest` when a digest is given."""

    name: str
    tag: str = ""
    digest: str = ""
    command: tuple[str, ...] = ()
    """Overrides the image's entrypoint when not empty."""

    @property
    def reference(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}" if self.tag else self.name


class ResourceRequirements(_Section):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    def to_manifest(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.limits:
            out["limits"] = dict(self.limits)
        if self.requests:
            out["requests"] = dict(self.requests)
        return out


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _one_uri(value: str) -> str:
    # Entries are joined with spaces for the router, which splits them again: as in the
    # reference, an entry with whitespace in it would become two.
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"a payload processor is one URI without whitespace, got {value!r}")
    return value


class TLSConfig(_Section):
    """TLS on the router's gRPC, REST and pod-to-pod ports (deployment.py sets MM_TLS_*)."""

    secret_name: str = Field(default="", alias="secretName")
    """Secret with tls.crt / tls.key (and optional ca.crt); empty = TLS off."""
    client_auth: Annotated[Literal["", "require", "optional"], BeforeValidator(_lower)] = Field(
        default="", alias="clientAuth"
    )
    """Client certificates on 8033/8008: "" not asked for, "optional", "require"."""

    @property
    def enabled(self) -> bool:
        return bool(self.secret_name)


class MetricsConfig(_Section):
    enabled: bool = True
    port: int = Field(default=2112, gt=0, lt=65536)
    scheme: Literal["http", "https"] = "http"
    disable_prometheus_operator_support: bool = Field(
        default=False, alias="disablePrometheusOperatorSupport"
    )
    per_model_metrics: bool = Field(default=False, alias="perModelMetrics")
    """Ours: `modelId`/`vModelId` labels on request metrics (MM_METRICS per_model_metrics);
    one series per model, so off by default as in the reference router."""


class ScaleToZeroConfig(_Section):
    enabled: bool = True
    grace_period_seconds: int = Field(default=60, ge=0, alias="gracePeriodSeconds")


class RestProxyConfig(_Section):
    """V2 REST. mmesh's router serves it itself; `image`/`resources` are accepted, unused."""

    enabled: bool = True
    port: int = Field(default=8008, gt=0, lt=65536)
    skip_verify: bool = Field(default=False, alias="skipVerify")
    image: ImageConfig | None = None
    resources: ResourceRequirements | None = None


class LocalObjectReference(_Section):
    name: str


class EnvVar(_Section):
    name: str
    value: str = ""


class ServingConfig(_Section):
    """The merged `model-serving-config` (reference: modelmesh-features.md §3.3)."""

    inference_service_name: str = Field(default="modelmesh-serving", alias="inferenceServiceName")
    """Name of the Service in front of every runtime pod, and the mesh (MM_SERVICE_NAME)."""
    inference_service_port: int = Field(default=8033, gt=0, lt=65536, alias="inferenceServicePort")
    storage_secret_name: str = Field(default="storage-config", alias="storageSecretName")
    pods_per_runtime: int = Field(default=2, ge=0, alias="podsPerRuntime")
    tls: TLSConfig = TLSConfig()
    headless_service: bool = Field(default=True, alias="headlessService")
    enable_access_logging: bool = Field(default=False, alias="enableAccessLogging")
    service_account_name: str = Field(default="", alias="serviceAccountName")
    metrics: MetricsConfig = MetricsConfig()
    scale_to_zero: ScaleToZeroConfig = Field(default=ScaleToZeroConfig(), alias="scaleToZero")
    grpc_max_message_size_bytes: int = Field(
        default=16_777_216, gt=0, alias="grpcMaxMessageSizeBytes"
    )
    rest_proxy: RestProxyConfig = Field(default=RestProxyConfig(), alias="restProxy")
    runtime_pod_labels: dict[str, str] = Field(default_factory=dict, alias="runtimePodLabels")
    runtime_pod_annotations: dict[str, str] = Field(
        default_factory=dict, alias="runtimePodAnnotations"
    )
    image_pull_secrets: tuple[LocalObjectReference, ...] = Field(
        default=(), alias="imagePullSecrets"
    )
    allow_any_pvc: bool = Field(default=False, alias="allowAnyPVC")
    model_mesh_image: ImageConfig = Field(
        default_factory=lambda: ImageConfig(name="mmesh-router", tag="latest"),
        alias="modelMeshImage",
    )
    model_mesh_resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, alias="modelMeshResources"
    )
    storage_helper_image: ImageConfig = Field(
        default_factory=lambda: ImageConfig(name="mmesh-router", tag="latest"),
        alias="storageHelperImage",
    )
    storage_helper_resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, alias="storageHelperResources"
    )
    built_in_server_types: tuple[str, ...] = Field(
        default=("triton", "mlserver", "ovms", "torchserve"), alias="builtInServerTypes"
    )
    payload_processors: tuple[Annotated[str, AfterValidator(_one_uri)], ...] = Field(
        default=(), alias="payloadProcessors"
    )
    """URIs joined with spaces into MM_PAYLOAD_PROCESSORS (see mmesh.router.payloads)."""
    inference_timeout_millis: int = Field(default=0, ge=0, alias="inferenceTimeoutMillis")
    """Ours (reference issue #134): default inference deadline, MM_INFERENCE_TIMEOUT_MS;
    0 = none. Clients override it per request with the `mm-timeout-ms` header."""
    internal_model_mesh_env_vars: tuple[EnvVar, ...] = Field(
        default=(), alias="internalModelMeshEnvVars"
    )
    etcd_secret_name: str = Field(default="model-serving-etcd", alias="etcdSecretName")
    """Deprecated in the reference (env ETCD_SECRET_NAME); kept so old ConfigMaps validate."""
    model_mesh_endpoint: str = Field(default="", alias="modelMeshEndpoint")
    """Development only in the reference; accepted and unused."""


# ---------------------------------------------------------------- merging


def merge_config(defaults_yaml: str, user_yaml: str | None) -> ServingConfig:
    """The user's ConfigMap YAML merged over the defaults; raise InvalidConfig if bad.

    An empty or missing user document means "defaults only". Bad defaults (a packaging
    bug) raise InvalidConfig too.
    """
    defaults = _normalized(_load(defaults_yaml, "defaults"), ServingConfig)
    user = _normalized(_load(user_yaml or "", "config.yaml"), ServingConfig)
    try:
        return ServingConfig.model_validate(deep_merge(defaults, user))
    except ValidationError as exc:
        raise InvalidConfig(_describe(exc)) from None


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"{what} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidConfig(f"{what} must be a YAML mapping, got {type(doc).__name__}")
    return doc


def _normalized(doc: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """`doc` with every key that names a field of `model` (in any case) spelled as its alias.

    Only keys of model sections are rewritten; free-form maps such as runtimePodLabels
    keep their keys. Unknown keys are kept so validation can report them.
    """
    by_lower = {_alias(name, f).lower(): name for name, f in model.model_fields.items()}
    by_lower |= {name.lower(): name for name in model.model_fields}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = by_lower.get(str(key).lower())
        if name is None:
            out[key] = value
            continue
        info = model.model_fields[name]
        out[_alias(name, info)] = _normalized_value(value, info.annotation)
    return out


def _alias(name: str, info: Any) -> str:
    alias: str | None = info.alias
    return alias or name


def _normalized_value(value: Any, annotation: Any) -> Any:
    section = _section_type(annotation)
    if section is None:
        return value
    if isinstance(value, dict):
        return _normalized(value, section)
    if isinstance(value, list):
        return [_normalized(v, section) if isinstance(v, dict) else v for v in value]
    return value


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The model class inside `X`, `X | None`, `tuple[X, ...]` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "<root>"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)
