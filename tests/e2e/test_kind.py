"""The seed tutorial against a real Kubernetes cluster: kind, the images, `helm install`.

Runs only where `kind`, `helm` and a Docker engine exist (the module skips and says which is
missing otherwise). It creates a throwaway kind cluster, builds the two images and loads them
into it, installs charts/mmesh the README's way (quickstart, namespace scope), forwards Service
`modelmesh-serving` (and the quickstart etcd) with `kubectl port-forward`, then runs the
tutorial module's tests unchanged against it; the cluster is deleted at the end.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import test_tutorial as tutorial
from tests.fixtures.cluster import KUBECTL, Cluster
from tests.fixtures.procs import ROOT, free_port

NAMESPACE = "modelmesh-serving"
IMAGES = {
    "mmesh-operator:latest": "Dockerfile.operator",
    "mmesh-router:latest": "Dockerfile.router",
}


def _docker_engine() -> str | None:
    """Why there is no usable Docker engine, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        return f"`docker info` failed: no Docker engine ({info.stderr.strip()[:200]})"
    return None


def _missing() -> list[str]:
    missing = [f"{tool} is not installed" for tool in ("kind", "helm") if not shutil.which(tool)]
    if not KUBECTL.exists():
        missing.append(f"kubectl is missing at {KUBECTL}")
    engine = _docker_engine()
    return missing + ([engine] if engine else [])


_MISSING = _missing()
if _MISSING:
    pytest.skip(
        "e2e on kind needs kind, helm and a Docker engine: " + "; ".join(_MISSING),
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(1800)  # kind, two image builds and helm come first


def _run(*argv: str, timeout: float = 900) -> None:
    proc = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stderr}{proc.stdout}"


class PortForwards:
    """`kubectl port-forward` of Services to fixed local ports, restarted whenever it exits
    (before the runtime pods exist there is nothing to forward to; a forwarded pod may go)."""

    def __init__(self, kubeconfig: Path, forwards: dict[str, list[str]]) -> None:
        self._argvs = [
            [str(KUBECTL), f"--kubeconfig={kubeconfig}", "-n", NAMESPACE, "port-forward",
             "--address", "127.0.0.1", target, *ports]
            for target, ports in forwards.items()
        ]  # fmt: skip
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads = [threading.Thread(target=self._keep, args=(a,)) for a in self._argvs]

    def _keep(self, argv: list[str]) -> None:
        while not self._stop.is_set():
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._procs.append(proc)
            while proc.poll() is None and not self._stop.wait(0.5):
                pass
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
            self._stop.wait(1.0)

    def __enter__(self) -> PortForwards:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The tutorial's `local_cluster`, here a kind cluster with mmesh installed by helm."""
    workdir = tmp_path_factory.mktemp("kind")
    name = f"mmesh-e2e-{secrets.token_hex(3)}"
    kubeconfig = workdir / "kubeconfig"
    _run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
         "--wait", "180s")  # fmt: skip
    try:
        for image, dockerfile in IMAGES.items():
            _run("docker", "build", "-f", dockerfile, "-t", image, ".", timeout=1800)
        _run("kind", "load", "docker-image", *IMAGES, "--name", name)
        _run("helm", "install", "mmesh", "charts/mmesh", "-n", NAMESPACE, "--create-namespace",
             "--set", "quickstart=true", "--set", "namespaceScope=true",
             "--kubeconfig", str(kubeconfig), "--wait", "--timeout", "10m")  # fmt: skip
        _run(str(KUBECTL), f"--kubeconfig={kubeconfig}", "config", "set-context", "--current",
             f"--namespace={NAMESPACE}")  # fmt: skip
        grpc, rest, etcd = free_port(), free_port(), free_port()
        forwards = {
            "service/modelmesh-serving": [f"{grpc}:8033", f"{rest}:8008"],
            "service/etcd": [f"{etcd}:2379"],
        }
        with PortForwards(kubeconfig, forwards):
            yield Cluster(
                workdir=workdir,
                kubeconfig=kubeconfig,
                grpc=f"127.0.0.1:{grpc}",
                rest=f"127.0.0.1:{rest}",
                etcd=f"127.0.0.1:{etcd}",
                s3="",
                namespace=NAMESPACE,
                pid=0,
            )
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], timeout=300, check=False)


# The tutorial, step for step and in its order, against the kind cluster above.
test_default_serving_runtimes_are_listed = tutorial.test_default_serving_runtimes_are_listed
test_apply_becomes_ready_with_the_grpc_url = tutorial.test_apply_becomes_ready_with_the_grpc_url
test_grpcurl_answers_the_digit = tutorial.test_grpcurl_answers_the_digit
test_curl_answers_the_digit = tutorial.test_curl_answers_the_digit
test_describe_shows_urls_and_loaded_status = tutorial.test_describe_shows_urls_and_loaded_status
test_storage_uri_form_rolls_to_a_new_model = tutorial.test_storage_uri_form_rolls_to_a_new_model
test_a_bad_inference_service_is_reported_and_serving_goes_on = (
    tutorial.test_a_bad_inference_service_is_reported_and_serving_goes_on
)
test_delete_unregisters_the_model = tutorial.test_delete_unregisters_the_model
