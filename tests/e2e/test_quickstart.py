"""The README's first command: `scripts/quickstart` runs the tutorial on a fresh local cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.fixtures.cluster import MLSERVER
from tests.fixtures.procs import ROOT

pytestmark = pytest.mark.timeout(300)


def test_quickstart_runs_the_tutorial_and_both_requests_answer_8() -> None:
    if not MLSERVER.exists():
        pytest.skip(f"MLServer is missing at {MLSERVER}: run scripts/setup")
    env = {**os.environ, "MMESH_GRPC_PORT": "0", "MMESH_REST_PORT": "0"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "quickstart"), "--exit"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    assert "inferenceservice.serving.kserve.io/example-sklearn-isvc created" in out
    assert re.search(
        r"example-sklearn-isvc\s+grpc://modelmesh-serving\.modelmesh-serving:8033\s+True", out
    )
    grpc_answer = json.loads(out[out.index('{\n  "modelName"') : out.index("\n}\n") + 2])
    assert grpc_answer["outputs"][0]["contents"]["int64Contents"] == ["8"]
    rest_line = next(line for line in out.splitlines() if line.startswith('{"model_name"'))
    assert json.loads(rest_line)["outputs"][0]["data"] == [8]
