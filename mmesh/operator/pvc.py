"""Pure: the PersistentVolumeClaims a runtime's pods mount (read-only, at /pvc_mounts/<claim>).

Reference: modelmesh-serving `ServingRuntimeReconciler.getPVCs` (modelmesh-features.md §3.9).

- Every `{"type": "pvc", "name": <claim>}` entry of the namespace's storage-config Secret is
  mounted into every runtime pod of the namespace (the Secret is trusted: no existence check).
- With `allowAnyPVC`, a claim that an InferenceService names (`storageUri: pvc://<claim>/...`
  or storage parameters `type: pvc`, `name: <claim>`) is mounted into the pods of the runtimes
  that can serve that InferenceService, but only if the claim exists: a pod that mounts a
  missing claim never starts, which would stop every other model of the runtime too.
- The list is sorted, so the same set never rolls the pods by changing order.

The shell reads the Secret and asks the API which claims exist; `runtime_claims` decides.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from mmesh.operator.resources import ServingRuntime
from mmesh.operator.runtime_selection import Requirement, supports

PVC_TYPE = "pvc"


@dataclass(frozen=True, slots=True)
class StorageClaims:
    """The claims named by the storage-config Secret, and the entries that could not be read."""

    names: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def storage_config_claims(entries: Mapping[str, str]) -> StorageClaims:
    """The `pvc` claims of a storage-config Secret (key -> JSON text), sorted and unique.

    An entry that is not a JSON object is reported and skipped (the adapter rejects it too);
    a `pvc` entry without a name is reported."""
    names: set[str] = set()
    problems: list[str] = []
    for key in sorted(entries):
        try:
            doc = json.loads(entries[key])
        except ValueError as exc:
            problems.append(f"storage entry {key!r} is not valid JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"storage entry {key!r} is not a JSON object")
            continue
        if doc.get("type") != PVC_TYPE:
            continue
        name = doc.get("name")
        if isinstance(name, str) and name:
            names.add(name)
        else:
            problems.append(f"storage entry {key!r} of type pvc names no claim ('name')")
    return StorageClaims(tuple(sorted(names)), tuple(problems))


def model_claim(parameters: Mapping[str, str]) -> str | None:
    """The claim a model's storage parameters name (`type: pvc`, `name`), if any."""
    if parameters.get("type") != PVC_TYPE:
        return None
    return parameters.get("name") or None


def runtime_claims(
    runtime: ServingRuntime,
    *,
    storage: Iterable[str],
    models: Iterable[tuple[Requirement, str]],
    existing: Collection[str],
    allow_any: bool,
    rest_enabled: bool,
) -> tuple[str, ...]:
    """The claims `runtime`'s pods mount: the storage-config ones, plus (with `allow_any`) the
    existing claims of the models it can serve; sorted."""
    names = set(storage)
    if allow_any:
        for requirement, claim in models:
            if claim in names or claim not in existing:
                continue
            if supports(runtime, requirement, rest_enabled=rest_enabled):
                names.add(claim)
    return tuple(sorted(names))


def wanted_claims(models: Iterable[tuple[Requirement, str]]) -> frozenset[str]:
    """Every claim the models name (the ones whose existence the shell checks)."""
    return frozenset(claim for _, claim in models)
