"""Pure: how one container of a pod template becomes a local process.

A pod on the local cluster has no network namespace and no mounts of its own, so three
translations stand in for them:
- the pod's address is its own 127.x.y.z, and every "this pod" address a container is given
  (`0.0.0.0`, `127.0.0.1`, `localhost`) becomes that address, so pods can share port numbers;
- each volume is a folder of the pod's, and a mount path named in a container's command, args or
  environment is rewritten to that folder; a PersistentVolumeClaim is a folder of the cluster's,
  `<workdir>/pvcs/<namespace>/<claim>`, and the parent of its mount path (the adapter's
  PVC_MOUNTS_DIR, /pvc_mounts) becomes a folder of links to the claims mounted under it;
- an image is a local environment: a folder of executables put first on PATH.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POD_LOCAL_HOSTS = frozenset({"0.0.0.0", "127.0.0.1", "localhost", "::", "[::]"})

POD_HOST_DEFAULTS = ("INTERNAL_HOST", "ADAPTER_HOST", "RUNTIME_HOST")
"""Settings of our router and adapter that default to 127.0.0.1, which means "this pod"."""

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1, "m": 0.001, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class PodSpecError(ValueError):
    """The pod cannot start as written; the message is the pod's waiting reason text."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PodIdentity:
    name: str
    namespace: str
    ip: str
    host_ip: str = "127.0.0.1"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    """The container's own environment (PATH included); nothing inherited."""


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (`500m`, `1Gi`, `128974848`, `1e3`) as a number."""
    raw = str(text).strip()
    try:
        return float(raw)
    except ValueError:
        pass
    match = _QUANTITY.match(raw)
    if not match or match.group(2) not in _SUFFIXES:
        raise PodSpecError("CreateContainerConfigError", f"invalid quantity {raw!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def resource_value(containers: Sequence[Mapping[str, Any]], ref: Mapping[str, Any]) -> str:
    """The value a `resourceFieldRef` stands for (`requests.memory` of a named container)."""
    name = ref.get("containerName")
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    for container in containers:
        if container.get("name") == name:
            amount = (container.get("resources") or {}).get(kind, {}).get(resource)
            if amount is None:
                return "0"
            divisor = parse_quantity(ref.get("divisor", "1"))
            value = parse_quantity(amount) / divisor
            return str(int(value) if resource != "cpu" else max(1, int(value + 0.999)))
    raise PodSpecError("CreateContainerConfigError", f"no container {name!r} for resourceFieldRef")


def field_value(pod: PodIdentity, path: str) -> str:
    """The value a `fieldRef` stands for."""
    values = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "status.podIP": pod.ip,
        "status.hostIP": pod.host_ip,
        "spec.nodeName": "local",
    }
    if path in values:
        return values[path]
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    if label:
        return pod.labels.get(label.group(1), "")
    raise PodSpecError("CreateContainerConfigError", f"fieldRef {path!r} is not supported")


def keyed_value(
    source: Mapping[str, Mapping[str, str]], kind: str, ref: Mapping[str, Any]
) -> str | None:
    """A `secretKeyRef` / `configMapKeyRef` value; None when it is optional and missing."""
    data = source.get(str(ref.get("name")))
    if data is not None and ref.get("key") in data:
        return data[str(ref["key"])]
    if ref.get("optional"):
        return None
    raise PodSpecError(
        "CreateContainerConfigError", f"{kind} {ref.get('name')!r} has no key {ref.get('key')!r}"
    )


@dataclass(frozen=True)
class PodSources:
    """What a pod's env and volumes may refer to, already fetched."""

    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    claims: frozenset[str] = frozenset()
    """The PersistentVolumeClaims of the pod's namespace that exist."""


def container_env(
    pod: PodIdentity,
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    sources: PodSources,
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (`$(VAR)` expanded), before any
    local translation."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom") or []:
        if "configMapRef" in ref:
            env.update(sources.config_maps.get(ref["configMapRef"]["name"], {}))
        if "secretRef" in ref:
            env.update(sources.secrets.get(ref["secretRef"]["name"], {}))
    for var in container.get("env") or []:
        value = _env_value(pod, spec, var, sources, env)
        if value is not None:
            env[var["name"]] = value
    return env


def _env_value(
    pod: PodIdentity,
    spec: Mapping[str, Any],
    var: Mapping[str, Any],
    sources: PodSources,
    earlier: Mapping[str, str],
) -> str | None:
    if "value" in var:
        return expand_refs(str(var["value"]), earlier)
    source = var.get("valueFrom") or {}
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        return resource_value(spec.get("containers") or [], source["resourceFieldRef"])
    if "secretKeyRef" in source:
        return keyed_value(sources.secrets, "secret", source["secretKeyRef"])
    if "configMapKeyRef" in source:
        return keyed_value(sources.config_maps, "configmap", source["configMapKeyRef"])
    return ""


def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion; unknown references stay as written."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def mount_table(
    container: Mapping[str, Any], volume_dirs: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(mount path, local folder) for each mount, longest mount path first."""
    table = []
    for mount in container.get("volumeMounts") or []:
        folder = volume_dirs.get(mount["name"])
        if folder is None:
            raise PodSpecError("CreateContainerConfigError", f"no volume {mount['name']!r}")
        if mount.get("subPath"):
            folder = f"{folder}/{mount['subPath']}"
        table.append((str(mount["mountPath"]).rstrip("/") or "/", folder))
    return sorted(table, key=lambda pair: len(pair[0]), reverse=True)


def claim_folder(root: str, namespace: str, claim: str) -> str:
    """The local folder standing for a PersistentVolumeClaim (shared by every pod)."""
    return f"{root}/pvcs/{namespace}/{claim}"


def parent_links(
    mounts: Sequence[tuple[str, str]], linked: Collection[str]
) -> dict[str, dict[str, str]]:
    """For mount paths in `linked` (say /pvc_mounts/<claim>): their parent directory -> {entry
    name -> local folder}, so a program told the parent finds each mount inside it. Parents
    that are `/`, or that are mounted or lie under a mount themselves, are left out."""
    mounted = [path for path, _ in mounts]
    parents: dict[str, dict[str, str]] = {}
    for path, folder in mounts:
        if path not in linked:
            continue
        parent, _, name = path.rpartition("/")
        if not parent or any(parent == m or parent.startswith(m + "/") for m in mounted):
            continue
        parents.setdefault(parent, {})[name] = folder
    return parents


def rewrite_paths(text: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Replace each mount path that starts a path in `text` (at the start, or after `:`, `=`,
    `,`, `;`, a quote or a space) by its local folder, in one pass: a folder that itself lies
    under another mount path (say /tmp) is not rewritten again."""
    if not mounts:
        return text
    folders = dict(mounts)
    paths = "|".join(re.escape(path) for path, _ in mounts)  # longest first: mount_table's order
    pattern = re.compile(r"(^|[:=,;\s\"'])(" + paths + r")(?=$|[/,;\s\"':])")
    return pattern.sub(lambda m: m.group(1) + folders[m.group(2)], text)


def localize_env(
    env: Mapping[str, str], pod_ip: str, mounts: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """Pod-local addresses become the pod's own; mount paths become local folders."""
    local = {}
    for name, value in env.items():
        local[name] = pod_ip if value.strip() in POD_LOCAL_HOSTS else rewrite_paths(value, mounts)
    for name in POD_HOST_DEFAULTS:
        local.setdefault(name, pod_ip)
    return local


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    """command + args with `$(VAR)` expanded; an image's own entrypoint is unknown locally."""
    command = [expand_refs(str(part), env) for part in container.get("command") or []]
    args = [expand_refs(str(part), env) for part in container.get("args") or []]
    if not command:
        raise PodSpecError(
            "CreateContainerConfigError",
            f"container {container.get('name')!r} names no command; the local cluster cannot "
            "run an image's default entrypoint",
        )
    return (*command, *args)


def plan_container(
    pod: PodIdentity,
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    sources: PodSources,
    volume_dirs: Mapping[str, str],
    bin_dir: str,
    base_path: str,
    extra_mounts: Sequence[tuple[str, str]] = (),
) -> ContainerPlan:
    """Everything needed to start `container` of `pod` as a local process; `extra_mounts`
    are more (path, folder) pairs to rewrite, such as `parent_links` folders."""
    mounts = sorted(
        [*mount_table(container, volume_dirs), *extra_mounts],
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    env = localize_env(container_env(pod, spec, container, sources), pod.ip, mounts)
    env["PATH"] = f"{bin_dir}:{base_path}"
    env.setdefault("HOSTNAME", pod.name)
    argv = tuple(rewrite_paths(part, mounts) for part in container_argv(container, env))
    return ContainerPlan(str(container["name"]), argv, env)


def match_image(image: str, images: Mapping[str, str]) -> str | None:
    """The local bin folder for `image`: the entry whose key is the image's repository name
    (registry and tag ignored), or a prefix of it."""
    repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    for name, bin_dir in images.items():
        if repository == name or repository.startswith(name):
            return bin_dir
    return None


def template_hash(template: Mapping[str, Any]) -> str:
    """A short stable name for a pod template (Kubernetes' pod-template-hash)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]
