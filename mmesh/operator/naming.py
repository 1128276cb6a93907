"""Pure: deterministic names the operator derives, and the checks that keep them legal.

- concrete model id `<isvc>__isvc-<10 hex>`: the hex is the first 5 bytes of the SHA-1 of
  the canonical JSON of the translated predictor spec, so any change to what the model is
  (format, runtime, protocol, storage, schema) yields a new id and a vmodel transition,
  while edits ModelMesh ignores (replicas, resources) do not (reference:
  modelmesh-serving predictor_controller.go concreteModelName);
- runtime Deployment `<service>-<runtime>` (`modelmesh-serving-mlserver-1.x`);
- label-value checks: names that end up as label values must be at most 63 characters of
  `[A-Za-z0-9._-]`, starting and ending alphanumeric.

Callers: translation, deployment, the kopf handlers (to find a runtime's Deployment).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from mmesh.core.ids import ModelId
from mmesh.operator.errors import FailureReason, InvalidRuntime, InvalidSpec

ISVC_SOURCE = "isvc"
"""Source tag in concrete model ids and the vmodel owner of InferenceServices."""
HASH_HEX_CHARS = 10
MAX_LABEL_VALUE = 63

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def canonical_json(doc: Mapping[str, Any]) -> str:
    """Key-sorted compact JSON: equal documents give equal text, whatever their key order."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """First 10 hex characters (5 bytes) of the SHA-1 of the canonical JSON of `spec`."""
    digest = hashlib.sha1(canonical_json(spec).encode(), usedforsecurity=False)
    return digest.hexdigest()[:HASH_HEX_CHARS]


def concrete_model_id(name: str, spec: Mapping[str, Any], source: str = ISVC_SOURCE) -> ModelId:
    """`<name>__<source>-<hash of spec>`."""
    return ModelId(f"{name}__{source}-{spec_hash(spec)}")


def parse_concrete_model_id(model_id: str) -> tuple[str, str] | None:
    """(resource name, source) of a concrete model id, or None if it is not one of ours.

    The etcd registry watch uses this to find the InferenceService a record belongs to.
    """
    name, sep, rest = model_id.rpartition("__")
    source, dash, digest = rest.rpartition("-")
    if not (sep and dash and name and source) or len(digest) != HASH_HEX_CHARS:
        return None
    if any(c not in "0123456789abcdef" for c in digest):
        return None
    return name, source


def is_label_value(value: str) -> bool:
    """Whether `value` may be a Kubernetes label value."""
    return len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(value) is not None


def check_isvc_name(name: str) -> None:
    """The InferenceService name becomes the vmodel id and a label value; raise if it can't."""
    if len(name) > MAX_LABEL_VALUE:
        raise InvalidSpec(
            FailureReason.INVALID_PREDICTOR_SPEC,
            f"InferenceService name {name!r} is {len(name)} characters; ModelMesh needs at "
            f"most {MAX_LABEL_VALUE} (it is used as a label value)",
        )
    if not is_label_value(name):
        raise InvalidSpec(
            FailureReason.INVALID_PREDICTOR_SPEC,
            f"InferenceService name {name!r} is not a valid label value",
        )


def deployment_name(runtime: str, service_name: str = "modelmesh-serving") -> str:
    """Name of the Deployment that runs `runtime`; raise InvalidRuntime if it is not legal.

    The name is also the value of the pods' `name` label, so it must be a label value as
    well as a DNS subdomain.
    """
    name = f"{service_name}-{runtime}"
    if len(name) > MAX_LABEL_VALUE:
        raise InvalidRuntime(
            runtime,
            f"Deployment name {name!r} is {len(name)} characters; at most {MAX_LABEL_VALUE} "
            "fit in the pods' name label",
        )
    if _DNS_SUBDOMAIN.fullmatch(name) is None or not is_label_value(name):
        raise InvalidRuntime(runtime, f"{name!r} is not a valid Deployment name")
    return name
