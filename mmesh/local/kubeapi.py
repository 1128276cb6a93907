"""The local cluster's Kubernetes API: kmock 0.8's emulator plus the fixes kopf and kubectl need.

kmock's KubernetesEmulator stores objects and streams watch events but lacks what kopf and
kubectl rely on (reference/toolchain.md, "kmock 0.8 gaps"). `StampingEmulator` adds:
resourceVersion / uid / creationTimestamp / generation stamping (and `generateName`);
JSON-patch `test` failures and stale merge-patch resourceVersions answered 422 / 409;
`/status` patches limited to `status`; watches that honour `?resourceVersion` and subscribe
before their snapshot; lists with the real resourceVersion plus kind/apiVersion and label
selectors; `Table` answers (CRD printer columns, Pod and Event columns) for `kubectl get`; core
discovery `groupVersion: v1`; a resourceVersion bump on DELETE; Namespace objects themselves
(`/api/v1/namespaces[/NAME]`, which kmock's path parser turns into a 500); and an OpenAPI v3
index that tells kubectl the server validates fields, so `kubectl apply` needs no
`--validate=false`.

`python -m mmesh.local.kubeapi --ready FILE [--port N]` serves it on 127.0.0.1 (the URL goes to
FILE) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import parsing as kmock_parsing

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@attrs.frozen
class _Invalid(kmock.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "the patch's test operation failed"


@attrs.frozen
class _Conflict(kmock.KubernetesError):
    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; please apply your changes to the latest version"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    return int(obj.get("metadata", {}).get("resourceVersion") or 0)


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the fixes kopf 1.45 and kubectl need (see the module doc)."""

    _revision: int = attrs.field(default=0, init=False)
    columns: dict[Any, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    logs_dir: Path | None = attrs.field(default=None, init=False)
    """`<logs_dir>/<pod>/logs/<container>.log` answers `kubectl logs` (the pod runner's files)."""
    """resource -> CRD additionalPrinterColumns, for Table answers."""

    def _next(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return dict(self._objects[key].raw)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.url.path.startswith(OPENAPI_V3):
            return self._serve_openapi(request.url.path)
        if request.subresource == "log" and request.name:
            return self._serve_log(request)
        if len(self._requests) > 5000:
            self._requests.clear()  # kept for assertions only; a long-lived process must not grow
        if request.resource is not None:
            async with self._lock:
                self._stamp(request)
        return await super()._handle(request)

    def _stamp(self, request: kmock.Request) -> None:
        data, action = request.data, request.action
        if action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):  # e.g. kopf's Events
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta.update(resourceVersion=self._next(), uid=str(uuid.uuid4()), generation=1)
            meta["creationTimestamp"] = _now()
        elif action == kmock.action.UPDATE and (current := self._current(request)) is not None:
            self._stamp_patch(request, current)
        elif action == kmock.action.DELETE and (current := self._current(request)) is not None:
            key: Any = (request.resource, request.namespace, request.name)
            obj = self._objects[key]
            obj["metadata"] = {**current["metadata"], "resourceVersion": self._next()}

    def _stamp_patch(self, request: kmock.Request, current: dict[str, Any]) -> None:
        data = request.data
        if isinstance(data, list):  # JSON patch: check `test` ops against the stored object
            try:
                after = jsonpatch.apply_patch(copy.deepcopy(current), data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _Invalid(message=str(exc)) from None
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next()})
            if after.get("spec") != current.get("spec"):
                gen = current["metadata"].get("generation", 1) + 1
                data.append({"op": "add", "path": "/metadata/generation", "value": gen})
            return
        if not isinstance(data, dict):
            return
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        if wanted and str(wanted) != str(_rv(current)):
            raise _Conflict()
        if request.subresource == "status":
            for key in [k for k in data if k != "status"]:
                del data[key]
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = self._next()
        if "spec" in data and data["spec"] != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1

    # ------------------------------------------------------------ reads

    def _kind(self, request: kmock.Request) -> tuple[str, str]:
        res: Any = request.resource
        info: Any = self._resources.get(res, None)
        kind = (info.kind if info and info.kind else res.plural.capitalize()) + "List"
        return kind, f"{res.group}/{res.version}" if res.group else str(res.version)

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            objs = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
            items = [o.raw for o in objs if not o.deleted]
            revision = str(self._revision)
        items = [o for o in items if _selected(o, request.params.get("labelSelector", ""))]
        kind, api_version = self._kind(request)
        if _wants_table(request):
            return self._table(request, items, revision)
        meta = {"resourceVersion": revision}
        return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj: Any = await super()._serve_fetch(request)
        return self._table(request, [obj], str(_rv(obj))) if _wants_table(request) else obj

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[cast(Any, request.resource)]
        mark = await bus.mark()  # subscribe first, then snapshot: nothing falls in between
        try:
            async with self._lock:
                objs = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
                live = [o.raw for o in objs if not o.deleted]
                snapshot = self._revision
            seen = {_key(o): _rv(o) for o in live}
            for obj in live:
                if _rv(obj) > since and _selected(obj, request.params.get("labelSelector", "")):
                    yield {"type": "ADDED", "object": obj}
            async for event in bus.stream(since=mark):
                if not self._fresh(request, event, seen, max(since, 0), snapshot):
                    continue
                yield event
        finally:
            await bus.unmark(mark)

    def _fresh(
        self, request: kmock.Request, event: Any, seen: dict[Any, int], since: int, snap: int
    ) -> bool:
        obj = event.get("object", {})
        meta = obj.get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        if not _selected(obj, request.params.get("labelSelector", "")):
            return False
        rv, key = _rv(obj), _key(obj)
        if event.get("type") == "DELETED":
            return rv > since and rv >= seen.get(key, 0)
        floor = seen.get(key, snap)  # not in the snapshot: gone by then
        return rv > max(since, floor)

    async def _serve_version(self, request: kmock.Request) -> Any:
        payload = cast(dict[str, Any], await super()._serve_version(request))
        if request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version
        for entry in payload.get("resources", []):
            if "/" in entry["name"]:  # subresources carry no short names (kubectl warns)
                entry["shortNames"] = []
        return payload

    def _serve_log(self, request: kmock.Request) -> aiohttp.web.Response:
        pod = self._current(request)
        if pod is None or self.logs_dir is None:
            return _status(404, "NotFound", f'pods "{request.name}" not found')
        containers = [c["name"] for c in pod.get("spec", {}).get("containers") or []]
        name = request.params.get("container") or (containers[0] if len(containers) == 1 else "")
        if name not in containers:
            choices = " ".join(containers)
            message = f"a container name must be specified for pod {request.name}"
            return _status(400, "BadRequest", f"{message}, choose one of: [{choices}]")
        path = self.logs_dir / str(request.name) / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        if tail := request.params.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        """kubectl's field-validation check: the index of group-versions, then one document per
        group-version whose PATCH operations name their kind and accept `fieldValidation`."""
        versions = {_gv_path(r.group, r.version): r for r in self._get_resources()}
        wanted = path.removeprefix(OPENAPI_V3).strip("/")
        if not wanted:
            paths = {gv: {"serverRelativeURL": f"{OPENAPI_V3}/{gv}"} for gv in versions}
            return aiohttp.web.json_response({"paths": paths})
        if wanted not in versions:
            return aiohttp.web.json_response({"message": "not found"}, status=404)
        ops = {}
        for res in self._get_resources():
            info: Any = self._resources.get(res, None)
            if _gv_path(res.group, res.version) != wanted or info is None or not info.kind:
                continue
            gvk = {"group": res.group, "version": res.version, "kind": info.kind}
            patch = {"x-kubernetes-group-version-kind": gvk, "parameters": FIELD_VALIDATION}
            scope = "/namespaces/{namespace}" if info.namespaced else ""
            ops[f"/{wanted}{scope}/{res.plural}/{{name}}"] = {"patch": patch}
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1"}, "paths": ops}
        return aiohttp.web.json_response(doc)

    def _table(self, request: kmock.Request, items: list[Any], revision: str) -> dict[str, Any]:
        default = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        columns = self.columns.get(request.resource) or default
        defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name"}]
        defs += [{"name": c["name"], "type": c["type"], "format": "", "description": ""}
                 for c in columns]  # fmt: skip
        rows = [
            {
                "cells": [o["metadata"]["name"], *(_cell(o, c) for c in columns)],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            }
            for o in items
        ]
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": revision},
            "columnDefinitions": defs,
            "rows": rows,
        }


OPENAPI_V3 = "/openapi/v3"


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}  # fmt: skip
    return aiohttp.web.json_response(body, status=code)


FIELD_VALIDATION = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]


def _gv_path(group: str | None, version: str | None) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _key(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = obj.get("metadata", {})
    return meta.get("namespace"), meta.get("name")


def _wants_table(request: kmock.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    """Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            ok = labels.get(k.strip()) != v.strip()
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            ok = labels.get(k.strip()) == v.strip()
        else:
            ok = (term[1:] not in labels) if term.startswith("!") else term in labels
        if not ok:
            return False
    return True


_STEP = re.compile(
    r"\.([A-Za-z0-9_-]+)|\[\?\(@\.([A-Za-z0-9_]+)==(?:'([^']*)'|(true|false))\)\]|(\[\*\])"
)


def _jsonpath(obj: Any, path: str) -> list[Any]:
    """The tiny JSONPath subset printer columns use: `.a.b`, `[*]` and `[?(@.k=='v')]`."""
    found = [obj]
    for match in _STEP.finditer(path):
        field, key, text, flag, star = match.groups()
        if star is not None:
            found = [x for f in found if isinstance(f, list) for x in f]
        elif field is not None:
            found = [f[field] for f in found if isinstance(f, dict) and field in f]
        else:
            want: Any = text if text is not None else flag == "true"
            found = [x for f in found if isinstance(f, list) for x in f
                     if isinstance(x, dict) and x.get(key) == want]  # fmt: skip
    return found


def _pod_ready(pod: Mapping[str, Any]) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or statuses)
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Mapping[str, Any]) -> str:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        reason = (status.get("state", {}).get("waiting") or {}).get("reason")
        if reason:
            return str(reason)
    return str(pod.get("status", {}).get("phase", "Pending"))


def _pod_restarts(pod: Mapping[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


COMPUTED: dict[str, Callable[[Mapping[str, Any]], object]] = {
    ".mmesh/pod-ready": _pod_ready,
    ".mmesh/pod-status": _pod_status,
    ".mmesh/pod-restarts": _pod_restarts,
}
"""Cells kubectl computes itself for built-in kinds, which no JSONPath can express."""

POD_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": ".mmesh/pod-ready"},
    {"name": "Status", "type": "string", "jsonPath": ".mmesh/pod-status"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".mmesh/pod-restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "IP", "type": "string", "jsonPath": ".status.podIP"},
]

DEPLOYMENT_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": ".mmesh/deployment-ready"},
    {"name": "Up-to-date", "type": "integer", "jsonPath": ".status.updatedReplicas"},
    {"name": "Available", "type": "integer", "jsonPath": ".status.availableReplicas"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _deployment_ready(deployment: Mapping[str, Any]) -> str:
    ready = deployment.get("status", {}).get("readyReplicas") or 0
    return f"{ready}/{deployment.get('spec', {}).get('replicas', 1)}"


COMPUTED[".mmesh/deployment-ready"] = _deployment_ready


def _cell(obj: Mapping[str, Any], column: Mapping[str, Any]) -> Any:
    if (compute := COMPUTED.get(column["jsonPath"])) is not None:
        return compute(obj)
    values = _jsonpath(obj, column["jsonPath"])
    if not values:
        return None
    if column["type"] == "date":
        return _age(str(values[0]))
    return values[0] if len(values) == 1 else ",".join(str(v) for v in values)


def _age(stamp: str) -> str:
    created = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


EVENT_COLUMNS = [
    {"name": "Type", "type": "string", "jsonPath": ".type"},
    {"name": "Reason", "type": "string", "jsonPath": ".reason"},
    {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
    {"name": "Message", "type": "string", "jsonPath": ".message"},
]
"""`kubectl get events` columns (kubectl asks the server for a Table)."""


_parse_path = kmock_parsing.parse_path
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def parse_path(path: str) -> kmock_parsing.ParsedPath:
    """kmock's path parser, plus the Namespace resource itself (`/api/v1/namespaces[/NAME
    [/status|finalize]]`), which kmock reads as a namespace prefix and fails on (500)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in _NAMESPACE_SUBRESOURCES)
    ):
        name = parts[3] if len(parts) > 3 else None
        sub = parts[4] if len(parts) > 4 else None
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
    return _parse_path(path)


def declare_crds(emulator: StampingEmulator, crd_dir: Path) -> None:
    """Declare every CRD in `crd_dir` (kmock does not learn resources from POSTed CRDs)."""
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec, names = doc["spec"], doc["spec"]["names"]
            for version in spec["versions"]:
                resource = f"{spec['group']}/{version['name']}/{names['plural']}"
                emulator.resources[resource] = kmock.ResourceInfo(
                    kind=names["kind"],
                    singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=set(names.get("shortNames", [])),
                    verbs={"get", "list", "watch", "create", "patch", "delete", "update"},
                    subresources=set(version.get("subresources", {})),
                )
                key = kmock.resource(resource)
                emulator.columns[key] = version.get("additionalPrinterColumns", [])


async def serve(crd_dir: Path, ready: Path, port: int = 0, logs: Path | None = None) -> None:
    """Run the emulator on 127.0.0.1 (`port` 0: a random one) until SIGTERM/SIGINT; its URL
    goes to `ready`."""
    kmock_parsing.parse_path = parse_path  # the emulator process only
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emulator = StampingEmulator()
    emulator.logs_dir = logs
    with contextlib.suppress(Exception):  # kmock re-raises every error it served on exit
        async with emulator, kmock.Server(emulator, host="127.0.0.1", port=port or None) as server:
            emulator.resources.load_bundled()
            declare_crds(emulator, crd_dir)
            emulator.columns[kmock.resource("v1/events")] = EVENT_COLUMNS
            emulator.columns[kmock.resource("v1/pods")] = POD_COLUMNS
            emulator.columns[kmock.resource("apps/v1/deployments")] = DEPLOYMENT_COLUMNS
            tmp = ready.with_suffix(".tmp")
            tmp.write_text(str(server.url).rstrip("/"))
            tmp.rename(ready)
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="An emulated Kubernetes API on 127.0.0.1")
    parser.add_argument("--crds", type=Path, default=CRD_DIR)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--logs", type=Path, default=None, help="the pod runner's pods folder")
    args = parser.parse_args()
    asyncio.run(serve(args.crds, args.ready, args.port, args.logs))


if __name__ == "__main__":
    main()
