"""The xgboost and lightgbm samples through the local cluster, when the model server venv has
those runtimes (`MMESH_MLSERVER_EXTRAS=1 scripts/setup`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.cluster import Cluster, isvc_ready, tutorial_request
from tests.fixtures.procs import ROOT

pytestmark = pytest.mark.timeout(300)

MLSERVER_PY = ROOT / ".venv-mlserver" / "bin" / "python"


def _has(module: str) -> bool:
    if not MLSERVER_PY.exists():
        return False
    probe = [str(MLSERVER_PY), "-c", f"import {module}, mlserver_{module}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


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
        name: {fmt}
      storage:
        key: localMinIO
        path: {path}
"""


@pytest.mark.parametrize(
    ("fmt", "path"),
    [("xgboost", "xgboost/mnist-xgb.json"), ("lightgbm", "lightgbm/mnist-lgbm.bst")],
)
def test_sample_model_answers_the_digit(local_cluster: Cluster, fmt: str, path: str) -> None:
    if not _has(fmt):
        pytest.skip(f"the {fmt} runtime is not installed: MMESH_MLSERVER_EXTRAS=1 scripts/setup")
    name = f"example-{fmt}-isvc"
    local_cluster.kubectl("apply", "-f", "-", stdin=ISVC.format(name=name, fmt=fmt, path=path))
    local_cluster.wait(lambda: isvc_ready(local_cluster, name), 180, f"{name} READY")

    proc = local_cluster.grpcurl_infer(tutorial_request(name))
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)["outputs"][0]
    if fmt == "xgboost":
        assert output["contents"]["int64Contents"] == ["8"]
    else:  # lightgbm answers the 10 class probabilities
        scores = output["contents"]["fp64Contents"]
        assert len(scores) == 10
        assert max(range(10), key=lambda i: scores[i]) == 8
    local_cluster.kubectl("delete", "isvc", name)
