"""The few Kubernetes API calls the local cluster's own parts make, with the official client.

Every call is blocking (the client is synchronous) and answers plain JSON dicts; async callers
run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


class LocalKube:
    def __init__(self, kubeconfig: Path) -> None:
        self._api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[attr-defined,no-untyped-call]
        # Any: bodies are plain dicts, which the client accepts though its stubs want models
        self.core: Any = client.CoreV1Api(self._api)
        self.apps: Any = client.AppsV1Api(self._api)
        self.custom: Any = client.CustomObjectsApi(self._api)

    def close(self) -> None:
        self._api.close()

    def deployments(self) -> list[dict[str, Any]]:
        items = _json(self.apps.list_deployment_for_all_namespaces(_preload_content=False))
        return list(items.get("items") or [])

    def pod_names(self) -> set[tuple[str, str]]:
        """(namespace, name) of every Pod object the API holds that nobody has deleted (a
        deleted pod stays, marked with deletionTimestamp, until its runner lets it go)."""
        items = _json(self.core.list_pod_for_all_namespaces(_preload_content=False))
        return {
            (p["metadata"].get("namespace", ""), p["metadata"]["name"])
            for p in items.get("items") or []
            if not p["metadata"].get("deletionTimestamp")
        }

    def patch_deployment_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.apps.patch_namespaced_deployment_status(name, namespace, {"status": dict(status)})

    def create_pod(self, manifest: Mapping[str, Any]) -> None:
        self.core.create_namespaced_pod(manifest["metadata"]["namespace"], dict(manifest))

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.core.patch_namespaced_pod(name, namespace, dict(patch))

    def patch_pod_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": dict(status)})

    def delete_pod(self, namespace: str, name: str) -> None:
        """The pod's containers have stopped: drop the runner's finalizer, so the object
        goes (at once if it was already marked deleted), and delete it."""
        try:
            self.core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": []}})
            self.core.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._maybe(lambda: self.core.read_namespaced_secret(name, namespace, **RAW))

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._maybe(lambda: self.core.read_namespaced_config_map(name, namespace, **RAW))

    def claims(self, namespace: str) -> set[str]:
        """Names of the namespace's PersistentVolumeClaims."""
        items = _json(self.core.list_namespaced_persistent_volume_claim(namespace, **RAW))
        return {c["metadata"]["name"] for c in items.get("items") or []}

    def unbound_claims(self) -> list[dict[str, Any]]:
        """Every PersistentVolumeClaim not yet Bound."""
        items = _json(self.core.list_persistent_volume_claim_for_all_namespaces(**RAW))
        found = items.get("items") or []
        return [c for c in found if (c.get("status") or {}).get("phase") != "Bound"]

    def bind_claim(self, namespace: str, name: str, folder: str, capacity: str) -> None:
        """Mark a claim Bound to its local folder (annotation `local.mmesh/path`)."""
        annotations = {"metadata": {"annotations": {CLAIM_PATH_ANNOTATION: folder}}}
        self.core.patch_namespaced_persistent_volume_claim(name, namespace, annotations)
        status = {"status": {"phase": "Bound", "capacity": {"storage": capacity}}}
        self.core.patch_namespaced_persistent_volume_claim_status(name, namespace, status)

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._maybe(lambda: self.core.read_namespaced_service(name, namespace, **RAW))

    def apply(self, manifest: Mapping[str, Any]) -> None:
        """Create `manifest`, or merge it into the existing object of that name."""
        kind, meta = manifest["kind"], manifest["metadata"]
        namespace = meta.get("namespace", "")
        if kind == "Namespace":
            self._create_or_patch(
                lambda: self.core.create_namespace(dict(manifest)),
                lambda: self.core.patch_namespace(meta["name"], dict(manifest)),
            )
            return
        creators = {
            "Secret": (self.core.create_namespaced_secret, self.core.patch_namespaced_secret),
            "ConfigMap": (
                self.core.create_namespaced_config_map,
                self.core.patch_namespaced_config_map,
            ),
            "Pod": (self.core.create_namespaced_pod, self.core.patch_namespaced_pod),
        }
        if kind in creators:
            create, patch = creators[kind]
            self._create_or_patch(
                lambda: create(namespace, dict(manifest)),
                lambda: patch(meta["name"], namespace, dict(manifest)),
            )
            return
        group, version = str(manifest["apiVersion"]).split("/")
        plural = kind.lower() + "s"
        self._create_or_patch(
            lambda: self.custom.create_namespaced_custom_object(
                group, version, namespace, plural, dict(manifest)
            ),
            lambda: self.custom.patch_namespaced_custom_object(
                group, version, namespace, plural, meta["name"], dict(manifest)
            ),
        )

    @staticmethod
    def _create_or_patch(create: Any, patch: Any) -> None:
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch()

    @staticmethod
    def _maybe(read: Any) -> dict[str, Any] | None:
        try:
            return _json(read())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


RAW: dict[str, Any] = {"_preload_content": False}
CLAIM_PATH_ANNOTATION = "local.mmesh/path"
"""On a PersistentVolumeClaim: the folder that stands for it (put the model files there)."""
