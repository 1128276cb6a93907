"""The tutorial's model through the whole runtime pod: router -> adapter -> MLServer, with
the model pulled from S3 and the registry in etcd. Inference with grpcurl and curl, exactly
as the tutorial types them, answers 8."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.local.samples import TUTORIAL_DIGIT
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.mlserver import MLServerProc
from tests.fixtures.procs import ROOT
from tests.fixtures.router import RouterProc, clients
from tests.fixtures.runtimes import AdapterProc

ISVC = "example-sklearn-isvc"
CONCRETE = f"{ISVC}__isvc-3642375d03"
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"


@pytest.fixture
def pod(
    start_adapter: Callable[[dict[str, str]], AbstractContextManager[AdapterProc]],
    start_router: Callable[..., AbstractContextManager[RouterProc]],
    mlserver: MLServerProc,
    storage_config: Path,
    etcd_server: EtcdServer,
) -> Iterator[RouterProc]:
    env = {
        "RUNTIME_PORT": str(mlserver.grpc_port),
        "ROOT_MODEL_DIR": str(mlserver.models_root),
        "STORAGE_CONFIG_DIR": str(storage_config),
        "LOADTIME_TIMEOUT": "90000",
    }
    with (
        start_adapter(env) as adapter,
        start_router(
            etcd_endpoint=etcd_server.endpoint,
            runtime_port=adapter.port,
            serving_port=mlserver.grpc_port,
        ) as router,
    ):
        with clients(router) as c:
            c.mesh.setVModel(
                mm.SetVModelRequest(
                    vModelId=ISVC,
                    targetModelId=CONCRETE,
                    owner="ksp",
                    modelInfo=mm.ModelInfo(
                        type="sklearn",
                        path="sklearn/mnist-svm.joblib",
                        key=json.dumps({"storage_key": "localMinIO"}),
                    ),
                    autoDeleteTargetModel=True,
                ),
                timeout=30,
            )
        yield router


def test_grpcurl_tutorial_request_returns_8(pod: RouterProc) -> None:
    body = {
        "model_name": ISVC,
        "inputs": [
            {
                "name": "predict",
                "shape": [1, 64],
                "datatype": "FP32",
                "contents": {"fp32_contents": TUTORIAL_DIGIT},
            }
        ],
    }
    out = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-import-path",
            str(ROOT / "proto"),
            "-proto",
            "grpc_predict_v2.proto",
            "-d",
            json.dumps(body),
            pod.target,
            "inference.GRPCInferenceService.ModelInfer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["modelName"] == CONCRETE
    assert answer["outputs"][0]["datatype"] == "INT64"
    assert answer["outputs"][0]["contents"]["int64Contents"] == ["8"]
    with clients(pod) as c:
        status = c.mesh.getVModelStatus(mm.GetVModelStatusRequest(vModelId=ISVC))
    assert status.activeModelStatus.status == mm.ModelStatusInfo.LOADED


def test_curl_rest_tutorial_request_returns_8(pod: RouterProc) -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "predict", "shape": [1, 64], "datatype": "FP32", "data": TUTORIAL_DIGIT}
            ]
        }
    )
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "-k",
            f"http://127.0.0.1:{pod.rest_port}/v2/models/{ISVC}/infer",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    answer = json.loads(out.stdout)
    assert answer["model_name"] == CONCRETE
    assert answer["outputs"][0]["data"] == [8]
