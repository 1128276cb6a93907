"""Real KServe V2 client libraries (tritonclient gRPC and HTTP) against the local cluster, right
after the tutorial InferenceService turns READY, as a new user would try them (each check
runs the client in its own process: see tests/e2e/v2_client.py)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.fixtures.cluster import EXAMPLES, Cluster, isvc_ready
from tests.fixtures.procs import ROOT, VENV_PY

pytestmark = pytest.mark.timeout(600)

NAME = "example-sklearn-isvc"
CONCRETE = re.compile(rf"^{NAME}__isvc-[0-9a-f]{{10}}$")


@pytest.fixture(scope="module")
def ready_cluster(local_cluster: Cluster) -> Cluster:
    local_cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))
    local_cluster.wait(lambda: isvc_ready(local_cluster, NAME), 180, f"{NAME} READY")
    return local_cluster


def client(check: str, address: str, model: str = NAME) -> dict[str, Any]:
    proc = subprocess.run(
        [str(VENV_PY), "-m", "tests.e2e.v2_client", check, address, model],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def test_grpc_health_server_metadata_and_model_ready(ready_cluster: Cluster) -> None:
    seen = client("grpc_health", ready_cluster.grpc)
    # READY means registered, loaded or not: it can serve (a first request pays the load).
    assert seen["live"] and seen["ready"]
    assert seen["model_ready"] and seen["model_ready_v1"]
    assert seen["unknown_ready"] is False
    assert seen["server"]["name"] == "mmesh"


def test_grpc_infer_raw_and_typed(ready_cluster: Cluster) -> None:
    raw = client("grpc_infer_raw", ready_cluster.grpc)
    assert CONCRETE.match(raw["model_name"]) and raw["predict"] == [8]
    typed = client("grpc_infer_typed", ready_cluster.grpc)
    assert CONCRETE.match(typed["model_name"]) and typed["predict"] == [8]


def test_grpc_model_metadata(ready_cluster: Cluster) -> None:
    metadata = client("grpc_metadata", ready_cluster.grpc)
    assert CONCRETE.match(metadata["name"]), metadata


def test_grpc_unknown_model_is_not_found(ready_cluster: Cluster) -> None:
    seen = client("grpc_unknown", ready_cluster.grpc)
    for call in ("infer", "metadata"):
        assert seen[call]["status"] == "StatusCode.NOT_FOUND", seen
        assert "no-such-model not found" in seen[call]["message"]


def test_http_health_metadata_and_model_ready(ready_cluster: Cluster) -> None:
    seen = client("http_health", ready_cluster.rest)
    assert seen["live"] and seen["ready"]
    assert seen["model_ready"] and seen["model_ready_v1"]
    assert seen["unknown_ready"] is False
    assert seen["server"]["name"] == "mmesh"
    assert CONCRETE.match(seen["metadata"]["name"])


def test_http_infer_json(ready_cluster: Cluster) -> None:
    seen = client("http_infer", ready_cluster.rest)
    assert CONCRETE.match(seen["response"]["model_name"])
    assert seen["response"]["outputs"][0]["data"] == [8]
    assert seen["predict"] == [[8]]


def test_http_infer_binary_data_the_clients_default(ready_cluster: Cluster) -> None:
    seen = client("http_infer_binary", ready_cluster.rest)
    assert CONCRETE.match(seen["model_name"])
    assert seen["binary_size"] == 8 and seen["predict"] == [[8]]


def test_http_unknown_model_is_404(ready_cluster: Cluster) -> None:
    seen = client("http_unknown", ready_cluster.rest)
    for call in ("infer", "metadata"):
        assert seen[call]["status"] == "404", seen
        assert "no-such-model not found" in seen[call]["message"]
    proc = ready_cluster.run("curl", "-s", f"http://{ready_cluster.rest}/v2/models/nope/ready")
    assert json.loads(proc.stdout) == {"error": "model nope not found"}
