"""I/O: the operator's only Kubernetes API calls (beyond kopf's own watching).

`Kube` wraps the official synchronous `kubernetes` client: apply (create, else JSON merge
patch) and delete for the objects the operator owns (Deployment, Service, Secret,
HorizontalPodAutoscaler), reads of the storage Secret and of PVC existence, list by
labels (filtered again here: not every API server honours selectors), scale, and the
InferenceService status patch. Bodies go in and come out as plain dicts (manifests from the
pure render modules), so nothing above this module sees client model classes. The calls
block: kopf handlers reach them through `asyncio.to_thread` (toolchain.md 4a).
"""

from __future__ import annotations

import base64
import builtins
import enum
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from mmesh.operator.errors import KubeUnavailable
from mmesh.operator.resources import GROUP, ISVC_VERSION

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 30.0
ISVC_PLURAL = "inferenceservices"

Manifest = dict[str, Any]


class Applied(enum.StrEnum):
    CREATED = "created"
    PATCHED = "patched"
    UNCHANGED = "unchanged"


def _body(response: Any) -> Manifest:
    data: Manifest = json.loads(response.data or b"{}")
    return data


def contains(existing: Any, desired: Any) -> bool:
    """Whether merging `desired` into `existing` would change nothing (maps recursively)."""
    if isinstance(desired, Mapping) and isinstance(existing, Mapping):
        return all(k in existing and contains(existing[k], v) for k, v in desired.items())
    return bool(existing == desired)


def secret_manifest(namespace: str, name: str, data: Mapping[str, str]) -> Manifest:
    """An Opaque Secret with `data` base64-encoded (as the API stores it)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    meta = {"name": name, "namespace": namespace}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": encoded,
    }


class Kube:
    """Typed-dict access to Deployments, Services, Secrets and InferenceService status."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        kinds: dict[str, tuple[Callable[..., Any], ...]] = {
            "Deployment": (
                self.apps.read_namespaced_deployment,
                self.apps.create_namespaced_deployment,
                self.apps.patch_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
                self.apps.list_namespaced_deployment,
            ),
            "Service": (
                self.core.read_namespaced_service,
                self.core.create_namespaced_service,
                self.core.patch_namespaced_service,
                self.core.delete_namespaced_service,
                self.core.list_namespaced_service,
            ),
            "Secret": (
                self.core.read_namespaced_secret,
                self.core.create_namespaced_secret,
                self.core.patch_namespaced_secret,
                self.core.delete_namespaced_secret,
                self.core.list_namespaced_secret,
            ),
            "HorizontalPodAutoscaler": (
                self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.create_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            ),
        }
        self._kinds = kinds

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account if there is one, else KUBECONFIG / ~/.kube/config."""
        try:
            config.load_incluster_config()  # type: ignore[attr-defined,no-untyped-call]
        except ConfigException:
            config.load_kube_config()  # type: ignore[attr-defined,no-untyped-call]
        return cls()

    def _ops(self, kind: str) -> tuple[Callable[..., Any], ...]:
        if kind not in self._kinds:
            raise ValueError(f"the operator does not manage {kind} objects")
        return self._kinds[kind]

    def get(self, kind: str, namespace: str, name: str) -> Manifest | None:
        read = self._ops(kind)[0]
        try:
            return _body(read(name, namespace, **_raw()))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, manifest: Manifest) -> Applied:
        """Create the object, or merge-patch it when it differs; never replaces."""
        kind, meta = manifest["kind"], manifest["metadata"]
        existing = self.get(kind, meta["namespace"], meta["name"])
        if existing is not None and contains(existing, manifest):
            return Applied.UNCHANGED
        _, create, patch, _, _ = self._ops(kind)
        if existing is None:
            try:
                create(meta["namespace"], manifest, **_raw())
                logger.info("created %s %s/%s", kind, meta["namespace"], meta["name"])
                return Applied.CREATED
            except ApiException as exc:
                if exc.status != 409:  # someone created it meanwhile: patch it instead
                    raise
        patch(meta["name"], meta["namespace"], manifest, _content_type=MERGE_PATCH, **_raw())
        logger.info("patched %s %s/%s", kind, meta["namespace"], meta["name"])
        return Applied.PATCHED

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object; False if it was not there."""
        try:
            self._ops(kind)[3](name, namespace, **_raw())
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        logger.info("deleted %s %s/%s", kind, namespace, name)
        return True

    def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[Manifest]:
        """Objects of `kind` in `namespace` carrying every label in `labels`."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        items = _body(self._ops(kind)[4](namespace, label_selector=selector, **_raw()))
        return [
            item
            for item in items.get("items") or []
            if contains(item.get("metadata", {}).get("labels") or {}, dict(labels))
        ]

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self.apps.patch_namespaced_deployment(
            name, namespace, body, _content_type=MERGE_PATCH, **_raw()
        )

    def patch_isvc_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the InferenceService's status; False if it is gone. KubeUnavailable
        when the API does not take it (the caller tries again soon)."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name, {"status": dict(status)},
                _content_type=MERGE_PATCH, **_raw(),
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeUnavailable(f"status of {namespace}/{name}", f"HTTP {exc.status}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnavailable(f"status of {namespace}/{name}", type(exc).__name__) from exc
        return True

    def list_namespaces(self) -> builtins.list[Manifest]:
        return list(_body(self.core.list_namespace(**_raw())).get("items") or [])

    def list_isvcs(self) -> builtins.list[Manifest]:
        """Every InferenceService of the cluster."""
        items = _body(
            self.custom.list_cluster_custom_object(GROUP, ISVC_VERSION, ISVC_PLURAL, **_raw())
        )
        return list(items.get("items") or [])

    def annotate_isvc(self, namespace: str, name: str, key: str, value: str) -> bool:
        """Merge-patch one annotation onto an InferenceService; False if it is gone."""
        body = {"metadata": {"annotations": {key: value}}}
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name, body,
                _content_type=MERGE_PATCH, **_raw(),
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's entries, decoded (undecodable bytes replaced); None if it is missing."""
        try:
            secret = _body(self.core.read_namespaced_secret(name, namespace, **_raw()))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = secret.get("data") or {}
        return {str(k): base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    def claim_exists(self, namespace: str, name: str) -> bool:
        """Whether the PersistentVolumeClaim exists."""
        try:
            self.core.read_namespaced_persistent_volume_claim(name, namespace, **_raw())
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def read_config_map(self, namespace: str, name: str) -> Manifest | None:
        try:
            return _body(self.core.read_namespaced_config_map(name, namespace, **_raw()))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _raw() -> dict[str, Any]:
    """Call options: raw JSON response (no model classes), bounded time."""
    return {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
