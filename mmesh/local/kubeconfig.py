"""The kubeconfig that points kubectl (and the operator) at the local cluster's API."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(path: Path, url: str, namespace: str) -> Path:
    """A one-context kubeconfig: cluster `mmesh-local` at `url`, default namespace `namespace`."""
    context = {"cluster": "mmesh-local", "user": "mmesh-local", "namespace": namespace}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mmesh-local", "cluster": {"server": url}}],
        "users": [{"name": "mmesh-local", "user": {"token": "local"}}],
        "contexts": [{"name": "mmesh-local", "context": context}],
        "current-context": "mmesh-local",
    }
    path.write_text(yaml.safe_dump(config))
    return path
