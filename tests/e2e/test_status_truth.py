"""`kubectl get isvc` tells the truth without any request being sent (issue 11).

A new InferenceService is loaded at once, as the reference's `loadNow` registration does: the
tutorial's reaches Loaded with at least one copy, and each broken one reaches FailedToLoad
with lastFailureInfo reason ModelLoadFailed and the cause in its message, all within 30 s of
`kubectl apply`, with no traffic at all. The broken ones: an object missing from the bucket,
a storage key the storage Secret lacks, a corrupt model file, a path escaping the model
folder (`../`), and a model whose load never finishes (its storage answers nothing; served by
a one-pod copy of the runtime with a 4 s load timeout).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import EXAMPLES, Cluster, isvc_ready, pod_row, runtime_pods
from tests.fixtures.procs import ROOT

pytestmark = pytest.mark.timeout(240)

TUTORIAL = "example-sklearn-isvc"
BUCKET = "modelmesh-example-models"
SAMPLE = "sklearn/mnist-svm.joblib"
SLOW_RUNTIME = "mlserver-slow"
LOAD_TIMEOUT_MS = 4000
WITHIN_S = 30.0


def isvc(name: str, storage: dict[str, Any], runtime: str | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"modelFormat": {"name": "sklearn"}, "storage": storage}
    if runtime:
        model["runtime"] = runtime
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh"},
        },
        "spec": {"predictor": {"model": model}},
    }


def slow_runtime(namespace: str) -> dict[str, Any]:
    """mlserver-1.x as shipped, one pod, not auto-selected, loads time out after 4 s."""
    doc = yaml.safe_load((ROOT / "config" / "runtimes" / "mlserver-1.x.yaml").read_text())
    doc["kind"] = "ServingRuntime"
    doc["metadata"] = {"name": SLOW_RUNTIME, "namespace": namespace}
    for fmt in doc["spec"]["supportedModelFormats"]:
        fmt["autoSelect"] = False
    doc["spec"]["replicas"] = 1
    doc["spec"]["builtInAdapter"]["modelLoadingTimeoutMillis"] = LOAD_TIMEOUT_MS
    return dict(doc)


class SilentServer:
    """An HTTP 'server' on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def upload(cluster: Cluster, key: str, body: bytes | None = None) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=cluster.s3, region_name="us-east-1",
        aws_access_key_id="user", aws_secret_access_key="user",
    )  # fmt: skip
    if body is None:
        s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": SAMPLE})
    else:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def model_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(cluster.isvc(name).get("status", {}).get("modelStatus") or {})


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(local_cluster: Cluster) -> Cluster:
    upload(local_cluster, "sklearn/truth/corrupt.joblib", b"this is not a joblib file\n" * 40)
    out = local_cluster.kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(slow_runtime(local_cluster.namespace))
    )
    assert f"servingruntime.serving.kserve.io/{SLOW_RUNTIME} created" in out
    return local_cluster


def runtime_up(cluster: Cluster, runtime: str, count: int) -> bool:
    pods = runtime_pods(cluster, runtime)
    return len(pods) == count and all(pod_row(p)[:2] == ("Running", 3) for p in pods)


def test_the_tutorial_is_loaded_with_no_request(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))

    def loaded() -> bool:
        status = model_status(cluster, TUTORIAL)
        copies = status.get("copies", {}).get("totalCopies", 0)
        return bool(
            isvc_ready(cluster, TUTORIAL)
            and status["states"]["activeModelState"] == "Loaded"
            and copies >= 1
        )

    # its runtime scales from zero first (MLServer starting takes its own time on a busy
    # machine): the 30 s are counted from the moment a pod is up
    cluster.wait(lambda: runtime_up(cluster, "mlserver-1.x", 2), 120, "the runtime's pods")
    up = time.monotonic()
    cluster.wait(loaded, WITHIN_S, f"{TUTORIAL} Loaded with no request")
    print(f"{TUTORIAL}: Loaded {time.monotonic() - up:.1f} s after its pods were up")


BROKEN = {
    "truth-missing": (
        {"key": "localMinIO", "path": "sklearn/truth/no-such-model.joblib"},
        "'sklearn/truth/no-such-model.joblib' not found in bucket",
    ),
    "truth-wrong-key": (
        {"key": "noSuchStorageKey", "path": SAMPLE},
        "storage key 'noSuchStorageKey' not found",
    ),
    "truth-corrupt": (
        {"key": "localMinIO", "path": "sklearn/truth/corrupt.joblib"},
        "",  # the model server's own words; checked below to be more than a placeholder
    ),
    "truth-escape": (
        {"key": "localMinIO", "path": "../../etc/passwd"},
        "escapes",
    ),
}


def failed_to_load(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = model_status(cluster, name)
    if status.get("states", {}).get("activeModelState") != "FailedToLoad":
        return None
    return dict(status.get("lastFailureInfo") or {})


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_model_is_failed_to_load_with_no_request(cluster: Cluster, name: str) -> None:
    storage, cause = BROKEN[name]
    out = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(isvc(name, storage)))
    assert f"inferenceservice.serving.kserve.io/{name} created" in out
    applied = time.monotonic()
    cluster.wait(lambda: failed_to_load(cluster, name) is not None, WITHIN_S, f"{name} failed")
    took = time.monotonic() - applied
    info = failed_to_load(cluster, name)
    assert info is not None
    assert info["reason"] == "ModelLoadFailed", info
    assert cause in info["message"], info
    assert len(info["message"]) > len("model load failed"), info
    assert info["modelRevisionName"].startswith(f"{name}__isvc-"), info
    assert not isvc_ready(cluster, name)
    print(f"{name}: FailedToLoad {took:.1f} s after apply: {info['message']}")
    cluster.kubectl("delete", "isvc", name)


def test_a_model_whose_load_never_ends_is_failed_to_load(
    cluster: Cluster, silent: SilentServer
) -> None:
    name = "truth-timeout"

    # the runtime scales from zero for its first InferenceService: apply, then time from
    # the moment its pod is up (what the 30 s bound is about)
    doc = isvc(name, {}, runtime=SLOW_RUNTIME)
    model = doc["spec"]["predictor"]["model"]
    del model["storage"]
    model["storageUri"] = f"http://127.0.0.1:{silent.port}/models/slow.joblib"
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    cluster.wait(lambda: runtime_up(cluster, SLOW_RUNTIME, 1), 120, f"the {SLOW_RUNTIME} pod")
    up = time.monotonic()
    cluster.wait(lambda: failed_to_load(cluster, name) is not None, WITHIN_S, f"{name} failed")
    info = failed_to_load(cluster, name)
    assert info is not None and info["reason"] == "ModelLoadFailed", info
    assert f"timed out after {LOAD_TIMEOUT_MS} ms" in info["message"], info
    print(f"{name}: FailedToLoad {time.monotonic() - up:.1f} s after its pod was up")


def test_the_tutorial_answers_at_its_first_request(cluster: Cluster) -> None:
    proc = cluster.grpcurl_infer(json.loads((EXAMPLES / "tutorial-request.json").read_text()))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"][0]["contents"]["int64Contents"] == ["8"]
