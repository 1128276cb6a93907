"""Render charts/mmesh with the helm binary (skipped when there is none).

`scripts/setup` puts Helm 3 at .tools/bin/helm; a `helm` on PATH is used otherwise. Helm's
cache, config and data homes point at a temporary directory so runs leave nothing behind.
Renders are cached per (values, namespace): the chart does not change during a run.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "mmesh"
NAMESPACE = "modelmesh-serving"
RELEASE = "mmesh"

Manifest = dict[str, Any]


def helm_binary() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


@functools.cache
def _helm_home() -> str:
    home = tempfile.mkdtemp(prefix="mmesh-helm-")  # also holds the values files
    atexit.register(shutil.rmtree, home, True)
    return home


def helm(*args: str, values: Manifest | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm with isolated homes; `values` go in as a values file."""
    binary = helm_binary()
    if binary is None:
        pytest.skip(
            "no helm binary: run scripts/setup (installs .tools/bin/helm) or put helm on PATH"
        )
    home = Path(_helm_home())
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    extra: list[str] = []
    if values is not None:
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        values_file = home / f"values-{digest}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        extra = ["--values", str(values_file)]
    return subprocess.run(
        [binary, *args, *extra], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@functools.cache
def _render(values_json: str, namespace: str, release: str) -> tuple[Manifest, ...]:
    result = helm(
        "template", release, str(CHART), "--namespace", namespace, "--include-crds",
        values=json.loads(values_json),
    )  # fmt: skip
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


class RenderError(Exception):
    """helm template failed; the message is helm's stderr."""


def render(
    values: Manifest | None = None, *, namespace: str = NAMESPACE, release: str = RELEASE
) -> list[Manifest]:
    """Every manifest `helm template` renders (CRDs included), as fresh dicts."""
    docs = _render(json.dumps(values or {}, sort_keys=True), namespace, release)
    fresh: list[Manifest] = json.loads(json.dumps(docs))  # callers may mutate
    return fresh


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


SCENARIOS: dict[str, Manifest] = {
    "defaults": {},
    "namespace-scope": {"namespaceScope": True},
    "cluster-quickstart": {"quickstart": True},
    "namespace-quickstart": {"namespaceScope": True, "quickstart": True},
    "no-network-policies": {"networkPolicies": {"enabled": False}},
    "everything-set": {
        "etcd": {
            "connection": {
                "endpoints": "https://etcd-a:2379,https://etcd-b:2379",
                "userid": "mmesh",
                "password": "secret",
                "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            }
        },
        "servingConfig": {"podsPerRuntime": 1, "scaleToZero": {"enabled": False}},
        "imagePullSecrets": ["regcred"],
        "operator": {
            "replicas": 2,
            "extraEnv": [{"name": "PYTHONFAULTHANDLER", "value": "1"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/a": "b"},
        },
        "runtimes": {"ovms": {"enabled": False}},
    },
}


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> Iterator[tuple[str, Manifest]]:
    yield request.param, SCENARIOS[request.param]
