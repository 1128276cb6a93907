"""A custom ServingRuntime (the stub runtime as its container, no builtInAdapter) serving an
InferenceService on the local cluster, as a user does it: kubectl apply, grpcurl.

With the storage helper on, the operator adds a `puller` container: it pulls the model from
the cluster's S3 server and hands the runtime's own mmesh.ModelRuntime API the local files.
With `storageHelper.disabled: true` the router talks to the runtime directly, which then gets
the raw storage path and key.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.fixtures.cluster import (
    Cluster,
    etcd_values,
    isvc_ready,
    pod_row,
    runtime_pods,
    tutorial_request,
)

pytestmark = pytest.mark.timeout(400)

CAPACITY = 400_000_000
MODEL_SIZE = 40_000_000
STATS_PORT = 8002
MODEL_PATH = "sklearn/mnist-svm.joblib"

RUNTIME = """apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: {name}
spec:
  supportedModelFormats:
    - name: stub-format
      autoSelect: true
  protocolVersions: [grpc-v2]
  multiModel: true
  replicas: 1
  grpcEndpoint: "port:8001"
  storageHelper:
    disabled: {disabled}
  containers:
    - name: stub
      image: mmesh-stub-runtime:latest
      command: [mmesh-stub-runtime]
      args: [--port, "8001", --stats-port, "{stats}", --capacity-bytes, "{capacity}",
             --size-bytes, "{size}"{extra}]
      env:
        - name: STUB_HOST
          value: "127.0.0.1"
"""

ISVC = """apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: stub-format
      runtime: {runtime}
      storage:
        key: localMinIO
        path: {path}
"""


def runtime_yaml(name: str, *, helper: bool) -> str:
    extra = ", --require-local-files" if helper else ""
    return RUNTIME.format(
        name=name,
        disabled="false" if helper else "true",
        stats=STATS_PORT,
        capacity=CAPACITY,
        size=MODEL_SIZE,
        extra=extra,
    )


def stub_stats(cluster: Cluster, runtime: str) -> dict[str, Any]:
    (pod,) = runtime_pods(cluster, runtime)
    url = f"http://{pod['status']['podIP']}:{STATS_PORT}/stats"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.load(resp))


def infer(cluster: Cluster, name: str) -> dict[str, Any]:
    proc = cluster.grpcurl_infer(tutorial_request(name))
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def applied(local_cluster: Cluster) -> Cluster:
    """Both runtimes and one InferenceService on each, applied at once (pods start together)."""
    for runtime, helper in (("stub-puller", True), ("stub-direct", False)):
        out = local_cluster.kubectl("apply", "-f", "-", stdin=runtime_yaml(runtime, helper=helper))
        assert out.strip() == f"servingruntime.serving.kserve.io/{runtime} created"
        isvc = ISVC.format(name=f"{runtime}-isvc", runtime=runtime, path=MODEL_PATH)
        local_cluster.kubectl("apply", "-f", "-", stdin=isvc)
    return local_cluster


def test_custom_runtime_through_the_puller_answers(applied: Cluster) -> None:
    name = "stub-puller-isvc"
    applied.wait(lambda: isvc_ready(applied, name), 240, f"{name} READY")

    (pod,) = runtime_pods(applied, "stub-puller")
    containers = [c["name"] for c in pod["spec"]["containers"]]
    assert containers == ["stub", "puller", "mm"]
    applied.wait(
        lambda: pod_row(runtime_pods(applied, "stub-puller")[0])[:2] == ("Running", 3), 60, "3/3"
    )

    answer = infer(applied, name)
    concrete = str(answer["modelName"])
    assert re.fullmatch(rf"{name}__isvc-[0-9a-f]{{10}}", concrete), answer
    sent = tutorial_request(name)["inputs"][0]
    assert answer["outputs"][0]["name"] == sent["name"]  # the stub echoes its inputs
    assert answer["outputs"][0]["contents"]["fp32Contents"] == sent["contents"]["fp32_contents"]

    got = stub_stats(applied, "stub-puller")["received"][concrete]
    assert got["path"].endswith(f"/{concrete}/mnist-svm.joblib")  # a local file, pulled
    assert got["bytes"] and got["bytes"] > 1000
    key = json.loads(got["key"])
    assert "storage_key" not in key and "storage_params" not in key
    assert key["disk_size_bytes"] == got["bytes"]


def test_puller_passes_the_runtimes_capacity_and_sizes_to_the_mesh(applied: Cluster) -> None:
    (pod,) = runtime_pods(applied, "stub-puller")
    instance = pod["metadata"]["name"][-12:]
    records = {
        key: json.loads(value)
        for key, value in etcd_values(applied, "").items()
        if key.endswith(f"/instances/{instance}")
    }
    assert len(records) == 1, list(records)
    (record,) = records.values()
    unit = 8192
    assert abs(record["cap"] * unit - CAPACITY) < unit  # the stub's, not a memory request
    assert abs(record["used"] * unit - MODEL_SIZE) < unit  # the size the stub reported


def test_storage_helper_disabled_talks_to_the_runtime_directly(applied: Cluster) -> None:
    name = "stub-direct-isvc"
    applied.wait(lambda: isvc_ready(applied, name), 240, f"{name} READY")
    (pod,) = runtime_pods(applied, "stub-direct")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["stub", "mm"]

    concrete = str(infer(applied, name)["modelName"])
    got = stub_stats(applied, "stub-direct")["received"][concrete]
    assert got["path"] == MODEL_PATH  # the storage path itself: nobody pulled it
    assert got["bytes"] is None
    assert json.loads(got["key"])["storage_key"] == "localMinIO"
