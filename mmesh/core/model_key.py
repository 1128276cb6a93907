"""Pure: ModelInfo.key, the JSON document that tells the adapter where a model's files are.

The operator writes it (`ModelKey.to_json`) when it registers an InferenceService; the router
passes it through untouched; the adapter reads it (`ModelKey.parse`). Field names follow the
reference's modelKey: `storage_key`, `storage_params`, `model_type`, `schema_path`,
`disk_size_bytes`, and the deprecated top-level `bucket` (read into `storage_params.bucket`
unless the params name one). Unknown fields are ignored, as the reference does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mmesh.core.errors import MeshError


class InvalidModelKey(MeshError):
    """A modelKey that is not JSON, not an object, or has a field of the wrong type."""


def _read_only(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


ReadOnlyMap = Annotated[Mapping[str, Any], AfterValidator(_read_only)]


class ModelKey(BaseModel):
    """The storage-related fields of a modelKey (frozen; its maps are read-only)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    storage_key: str | None = None
    """Entry of the storage-config secret; None means "use a default entry"."""
    storage_params: ReadOnlyMap = Field(default_factory=lambda: MappingProxyType({}))
    """Per-model overrides laid over the secret entry (`type`, `bucket`, `name`, ...)."""
    model_type: ReadOnlyMap | None = None
    """`{"name": ..., "version": ...}`, passed through untouched."""
    schema_path: str | None = None
    disk_size_bytes: Annotated[int, Field(ge=0)] | None = None

    @classmethod
    def parse(cls, raw: str) -> ModelKey:
        """Read a modelKey; an empty string is an empty key. Raises InvalidModelKey."""
        if not raw.strip():
            return cls()
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidModelKey(f"modelKey is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            kind = "null" if doc is None else type(doc).__name__
            raise InvalidModelKey(f"modelKey must be a JSON object, got {kind}")
        bucket = doc.get("bucket")
        if bucket is not None and not isinstance(bucket, str):
            raise InvalidModelKey(f"modelKey field 'bucket' must be a string, got {bucket!r}")
        try:
            key = cls.model_validate(doc)
        except ValidationError as exc:
            raise InvalidModelKey(_first_problem(exc)) from None
        if bucket and "bucket" not in key.storage_params:
            return key.model_copy(
                update={"storage_params": {**key.storage_params, "bucket": bucket}}
            )
        return key

    def to_json(self) -> str:
        """The compact document, absent fields left out (the operator's registrations)."""
        doc: dict[str, Any] = {}
        if self.storage_key is not None:
            doc["storage_key"] = self.storage_key
        if self.storage_params:
            doc["storage_params"] = dict(sorted(self.storage_params.items()))
        if self.model_type is not None:
            doc["model_type"] = dict(self.model_type)
        if self.schema_path is not None:
            doc["schema_path"] = self.schema_path
        if self.disk_size_bytes is not None:
            doc["disk_size_bytes"] = self.disk_size_bytes
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"modelKey field {field!r}: {error['msg']}, got {error['input']!r}"
