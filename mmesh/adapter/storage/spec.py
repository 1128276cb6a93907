"""Pure: what to pull, from where, and where it lands on local disk.

The router hands the adapter a `modelKey` JSON string and a `modelPath`; the adapter
reads the `storage-config` secret mount (`config.py`) and then calls, in order:

    parse_model_key(raw)                   -> ModelKey      the request's storage fields
    resolve_storage(model_key, configs)    -> StorageSpec   secret entry + per-model params
    plan_local_target(root, id, path)      -> LocalTarget   where the files go

A provider (`provider.py`) then pulls `LocalTarget.remote_path` into
`LocalTarget.local_path`. `object_relative_path` guards each object of a prefix pull.
Rules mirror kserve/modelmesh-runtime-adapter model-serving-puller/puller (puller.go,
config.go, dotpath.go). Nothing here touches the file system or the network.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

from mmesh.adapter.errors import InvalidModelRequest, UnknownStorageKey, UnsupportedStorage
from mmesh.core.model_key import InvalidModelKey
from mmesh.core.model_key import ModelKey as ModelKey  # re-exported for the adapter

DEFAULT_KEY = "default"
MODEL_FALLBACK_NAME = "_model"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class StorageType(enum.StrEnum):
    S3 = "s3"
    HTTP = "http"
    PVC = "pvc"
    AZURE = "azure"
    GCS = "gcs"


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """One resolved storage location: its type plus the fields that type reads.

    Fields that hold credentials or key material stay out of `repr` so specs can be
    logged.
    """

    type: StorageType
    bucket: str | None = None
    endpoint_url: str | None = None
    """S3 endpoint; for azure and gcs an override of the public service URL (an extension)."""
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    certificate: str | None = field(default=None, repr=False)
    """PEM CA bundle trusted for the endpoint (s3, http)."""
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """HTTP request headers as (name, value) pairs; a name may repeat."""
    client_certificate: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)
    name: str | None = None
    """PVC claim name."""
    account_name: str | None = None
    """Azure storage account."""
    container: str | None = None
    """Azure blob container."""
    connection_string: str | None = field(default=None, repr=False)
    """Azure connection string (account key or SAS, and the blob endpoint)."""
    private_key: str | None = field(default=None, repr=False)
    """GCS service-account private key (PEM)."""
    client_email: str | None = None
    """GCS service-account email."""
    token_uri: str | None = None
    """GCS OAuth2 token endpoint of the service account."""


@dataclass(frozen=True, slots=True)
class LocalTarget:
    """Where one model's files go."""

    model_dir: PurePosixPath
    """`<root>/<modelId>`: everything the adapter wrote for this model."""
    local_path: PurePosixPath
    """`<model_dir>/<basename of the remote path>`: the file, directory or link to create."""
    remote_path: str
    """The storage path to pull, leading slashes trimmed."""


# --- modelKey ------------------------------------------------------------------------------


def parse_model_key(raw: str) -> ModelKey:
    """The router's `modelKey` JSON (core/model_key.py), its faults as InvalidModelRequest."""
    try:
        return ModelKey.parse(raw)
    except InvalidModelKey as exc:
        raise InvalidModelRequest(str(exc)) from None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- storage resolution --------------------------------------------------------------------

# Canonical field <- accepted aliases, first match wins. `default_bucket` is the deprecated
# s3 spelling; the AWS_* names are what KServe-style S3 secrets carry (modelmesh-serving #288).
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "bucket": ("default_bucket",),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "region": ("AWS_DEFAULT_REGION", "AWS_REGION"),
    "endpoint_url": ("AWS_ENDPOINT_URL",),
}


def resolve_storage(model_key: ModelKey, configs: Mapping[str, Mapping[str, Any]]) -> StorageSpec:
    """The storage a model is pulled from: a secret entry with the model's params on top.

    An explicit `storage_key` must name an entry. Without one, `default_<params.type>` is
    used if it exists, else `default` (only when its type agrees with the params' type, so
    one kind's fields never leak into another), else the params alone. Params may address
    nested fields with dots (`headers.Authorization`), as upstream's dotpath overrides do.
    """
    merged = _merge_overrides(_base_config(model_key, configs), model_key.storage_params)
    return _build_spec(merged)


def _base_config(
    model_key: ModelKey, configs: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any]:
    key = model_key.storage_key
    if key is not None:
        if key not in configs:
            known = ", ".join(sorted(configs)) or "none"
            raise UnknownStorageKey(
                f"storage key {key!r} not found in storage-config (known keys: {known})"
            )
        return configs[key]
    wanted = _type_name(model_key.storage_params.get("type"))
    if wanted and f"{DEFAULT_KEY}_{wanted}" in configs:
        return configs[f"{DEFAULT_KEY}_{wanted}"]
    default = configs.get(DEFAULT_KEY)
    if default is None:
        return _EMPTY
    default_type = _type_name(default.get("type"))
    return default if not (wanted and default_type) or wanted == default_type else _EMPTY


def _type_name(value: object) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = _deep_copy(base)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                at = ".".join(parents[: i + 1])
                raise UnsupportedStorage(f"storage param {dotted!r}: field {at!r} is not an object")
            node = child
        node[leaf] = value
    return merged


def _deep_copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def _build_spec(doc: Mapping[str, Any]) -> StorageSpec:
    raw_type = _field(doc, "type")
    if raw_type is None:
        raise UnsupportedStorage(
            "storage type not set: give storage_params.type or a storage key whose entry has one"
        )
    try:
        kind = StorageType(raw_type.strip().lower())
    except ValueError:
        supported = ", ".join(t.value for t in StorageType)
        raise UnsupportedStorage(
            f"unsupported storage type {raw_type!r} (supported: {supported})"
        ) from None
    return _BUILDERS[kind](doc)


def _build_s3(doc: Mapping[str, Any]) -> StorageSpec:
    endpoint = _field(doc, "endpoint_url")
    if endpoint is not None:
        _check_url(endpoint, "endpoint_url")
    key_id, secret = _field(doc, "access_key_id"), _field(doc, "secret_access_key")
    if (key_id is None) != (secret is None):
        raise UnsupportedStorage("s3 storage needs both access_key_id and secret_access_key")
    return StorageSpec(
        type=StorageType.S3,
        bucket=_required(doc, "bucket", StorageType.S3),
        endpoint_url=endpoint,
        region=_field(doc, "region"),
        access_key_id=key_id,
        secret_access_key=secret,
        certificate=_field(doc, "certificate"),
    )


def _build_http(doc: Mapping[str, Any]) -> StorageSpec:
    url = _required(doc, "url", StorageType.HTTP)
    _check_url(url, "url")
    cert, key = _field(doc, "client_certificate"), _field(doc, "client_key")
    if (cert is None) != (key is None):
        raise UnsupportedStorage("http storage needs both client_certificate and client_key")
    return StorageSpec(
        type=StorageType.HTTP,
        url=url,
        headers=_headers(doc.get("headers")),
        certificate=_field(doc, "certificate"),
        client_certificate=cert,
        client_key=key,
    )


def _build_pvc(doc: Mapping[str, Any]) -> StorageSpec:
    name = _required(doc, "name", StorageType.PVC)
    if not _is_single_segment(name):
        raise UnsupportedStorage(f"pvc name {name!r} is not a single path segment")
    return StorageSpec(type=StorageType.PVC, name=name)


def _build_azure(doc: Mapping[str, Any]) -> StorageSpec:
    # Upstream also accepts a service principal (client_id/client_secret/tenant_id); that
    # needs azure-identity and a real Entra ID tenant to test, so it is refused by name.
    if any(_field(doc, f) is not None for f in ("client_id", "client_secret", "tenant_id")):
        raise UnsupportedStorage(
            "azure service-principal credentials (client_id/client_secret/tenant_id) are "
            "not supported; use connection_string"
        )
    connection_string = _field(doc, "connection_string")
    endpoint = _field(doc, "endpoint_url")
    if endpoint is not None:
        _check_url(endpoint, "endpoint_url")
    account = _field(doc, "account_name")
    if connection_string is None and endpoint is None and account is None:
        raise UnsupportedStorage("azure storage needs 'account_name' or 'connection_string'")
    return StorageSpec(
        type=StorageType.AZURE,
        account_name=account,
        container=_required(doc, "container", StorageType.AZURE),
        connection_string=connection_string,
        endpoint_url=endpoint,
    )


def _build_gcs(doc: Mapping[str, Any]) -> StorageSpec:
    key, email = _field(doc, "private_key"), _field(doc, "client_email")
    if (key is None) != (email is None):
        raise UnsupportedStorage("gcs storage needs both private_key and client_email")
    endpoint, token_uri = _field(doc, "endpoint_url"), _field(doc, "token_uri")
    for name, url in (("endpoint_url", endpoint), ("token_uri", token_uri)):
        if url is not None:
            _check_url(url, name)
    return StorageSpec(
        type=StorageType.GCS,
        bucket=_required(doc, "bucket", StorageType.GCS),
        private_key=key,
        client_email=email,
        token_uri=token_uri,
        endpoint_url=endpoint,
    )


_BUILDERS = {
    StorageType.S3: _build_s3,
    StorageType.HTTP: _build_http,
    StorageType.PVC: _build_pvc,
    StorageType.AZURE: _build_azure,
    StorageType.GCS: _build_gcs,
}


def _field(doc: Mapping[str, Any], name: str) -> str | None:
    """A string field by its canonical name or an alias; empty strings count as unset."""
    for candidate in (name, *_ALIASES.get(name, ())):
        value = doc.get(candidate)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise UnsupportedStorage(
                f"storage field {candidate!r} must be a string, got {_kind(value)}"
            )
        return value
    return None


def _required(doc: Mapping[str, Any], name: str, kind: StorageType) -> str:
    value = _field(doc, name)
    if value is None:
        raise UnsupportedStorage(f"{kind.value} storage needs {name!r}")
    return value


# scheme://[userinfo@]host[:port][path]; the query and fragment are left unmatched.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^/?#:\[\]]*)(?::(?P<port>[0-9]*))?"
    r"(?P<path>(?:/[^?#]*)?)(?=[?#]|$)"
)


def _check_url(url: str, name: str) -> None:
    match = _URL.match(url)
    valid = (
        match is not None
        and match["scheme"].lower() in ("http", "https")
        and bool(match["host"])
        and (not match["port"] or int(match["port"]) < 65536)
    )
    if not valid:
        raise UnsupportedStorage(
            f"storage field {name!r} must be an http(s) URL with a host, got {redact_url(url)!r}"
        )


def redact_url(url: str) -> str:
    """`url` without user info, query or fragment, fit for error messages and logs."""
    match = _URL.match(url)
    if match is None:
        return "<hidden>" if "@" in url else re.split(r"[?#]", url, maxsplit=1)[0]
    port = f":{match['port']}" if match["port"] else ""
    return f"{match['scheme']}://{match['host']}{port}{match['path']}"


def _headers(raw: object) -> tuple[tuple[str, str], ...]:
    """`{"name": "v"}` or `{"name": ["v1", "v2"]}`, or that object as a JSON string."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UnsupportedStorage(
                f"storage field 'headers' is not a JSON object: {exc}"
            ) from exc
    if not isinstance(raw, dict):
        raise UnsupportedStorage(f"storage field 'headers' must be an object, got {_kind(raw)}")
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise UnsupportedStorage(f"header {name!r} must be a string or a list of strings")
        pairs.extend((name, v) for v in values)
    return tuple(pairs)


# --- local paths ---------------------------------------------------------------------------


def plan_local_target(root_dir: PurePosixPath, model_id: str, model_path: str) -> LocalTarget:
    """Model files go to `<root>/<modelId>/<basename(path)>`.

    The basename is `_model` when the path has no name (empty or only slashes). Leading
    slashes are trimmed from the remote path (modelmesh-serving #97). A `..` segment, a
    NUL byte, or a model id that is not one plain path segment is rejected.
    """
    if not _is_single_segment(model_id):
        raise InvalidModelRequest(f"model id {model_id!r}: path escapes the model root")
    if "\0" in model_path:
        raise InvalidModelRequest(f"model path {model_path!r} contains a NUL byte")
    remote = model_path.lstrip("/")
    segments = remote.split("/")
    if ".." in segments:
        raise InvalidModelRequest(f"model path {model_path!r}: path escapes the model root")
    names = [s for s in segments if s not in ("", ".")]
    model_dir = root_dir / model_id
    basename = names[-1] if names else MODEL_FALLBACK_NAME
    return LocalTarget(model_dir=model_dir, local_path=model_dir / basename, remote_path=remote)


def object_relative_path(prefix: str, key: str) -> PurePosixPath | None:
    """Where object `key`, listed under `prefix`, goes below the target directory.

    None for folder markers (nothing left after the prefix). Empty and `.` segments are
    dropped; a `..` segment or a NUL byte would escape the target and is rejected.
    """
    if not key.startswith(prefix):
        raise InvalidModelRequest(f"object key {key!r} is not under prefix {prefix!r}")
    segments = key[len(prefix) :].split("/")
    if ".." in segments or "\0" in key:
        raise InvalidModelRequest(f"object key {key!r} escapes the model directory")
    names = [s for s in segments if s not in ("", ".")]
    if not names or key.endswith("/"):
        return None
    return PurePosixPath(*names)


def _is_single_segment(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


# --- the request handed on to a custom runtime ----------------------------------------------

STORAGE_KEY_FIELDS = ("storage_key", "storage_params", "bucket")


def local_model_key(raw: str, *, disk_size_bytes: int, schema_path: str | None) -> str:
    """The modelKey a custom runtime gets once the files are local: the storage fields
    (which may hold secrets the runtime has no use for) dropped, the size on disk and the
    local schema file added, every other field passed through as the router sent it."""
    doc: dict[str, Any] = {}
    if raw.strip():
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise InvalidModelRequest(f"modelKey must be a JSON object, got {_kind(parsed)}")
        doc = parsed
    for name in STORAGE_KEY_FIELDS:
        doc.pop(name, None)
    doc["disk_size_bytes"] = disk_size_bytes
    if schema_path:
        doc["schema_path"] = schema_path
    else:
        doc.pop("schema_path", None)
    return json.dumps(doc, separators=(",", ":"))
