"""The adapter process against a real MLServer and a real S3 server (moto).

The tutorial's model is trained here, uploaded to S3, loaded through the adapter's
ModelRuntime API into MLServer, and answers the tutorial's request with 8. Every kind of
bad input gets its own status and message, and the adapter keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import grpc_predict_v2_pb2_grpc as v2_grpc
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.mlserver import MLServerProc
from tests.fixtures.models import TUTORIAL_DIGIT
from tests.fixtures.procs import free_port
from tests.fixtures.runtimes import AdapterProc, runtime_status

MEM_REQ = 1024 * 1024 * 1024
MEM_BUFFER = 128 * 1024 * 1024

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]


@pytest.fixture
def adapter(
    start_adapter: StartAdapter, mlserver: MLServerProc, storage_config: Path
) -> Iterator[AdapterProc]:
    env = {
        "RUNTIME_PORT": str(mlserver.grpc_port),
        "ROOT_MODEL_DIR": str(mlserver.models_root),
        "STORAGE_CONFIG_DIR": str(storage_config),
        "CONTAINER_MEM_REQ_BYTES": str(MEM_REQ),
        "MEM_BUFFER_BYTES": str(MEM_BUFFER),
        "LOADTIME_TIMEOUT": "20000",
    }
    with start_adapter(env) as proc:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.READY
        yield proc


@pytest.fixture
def runtime(adapter: AdapterProc) -> Iterator[rt_grpc.ModelRuntimeStub]:
    with grpc.insecure_channel(adapter.target) as channel:
        yield rt_grpc.ModelRuntimeStub(channel)


def tutorial_request(model_id: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="predict",
        datatype="FP32",
        shape=[1, 64],
        contents=v2.InferTensorContents(fp32_contents=TUTORIAL_DIGIT),
    )
    return v2.ModelInferRequest(model_name=model_id, inputs=[tensor])


def infer_on_mlserver(mlserver: MLServerProc, model_id: str) -> v2.ModelInferResponse:
    with grpc.insecure_channel(mlserver.grpc_target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        resp: v2.ModelInferResponse = stub.ModelInfer(tutorial_request(model_id), timeout=10)
    return resp


def load(
    runtime: rt_grpc.ModelRuntimeStub,
    model_id: str,
    path: str,
    key: dict[str, object],
    model_type: str = "sklearn",
) -> rt.LoadModelResponse:
    resp: rt.LoadModelResponse = runtime.loadModel(
        rt.LoadModelRequest(
            modelId=model_id, modelType=model_type, modelPath=path, modelKey=json.dumps(key)
        ),
        timeout=30,
    )
    return resp


def test_runtime_status_reports_reference_limits(adapter: AdapterProc) -> None:
    status = runtime_status(adapter.target)
    assert status.status == rt.RuntimeStatusResponse.READY
    assert status.capacityInBytes == MEM_REQ - MEM_BUFFER
    assert status.maxLoadingConcurrency == 1
    assert status.modelLoadingTimeoutMs == 20000
    assert status.defaultModelSizeInBytes == 1_000_000
    assert status.runtimeVersion  # the server's own version when RUNTIME_VERSION is unset
    paths = {k: list(v.idInjectionPath) for k, v in status.methodInfos.items()}
    assert paths == {
        "inference.GRPCInferenceService/ModelInfer": [1],
        "inference.GRPCInferenceService/ModelMetadata": [1],
    }


def test_tutorial_model_loads_from_s3_and_predicts_8(
    runtime: rt_grpc.ModelRuntimeStub, mlserver: MLServerProc
) -> None:
    model_id = "example-sklearn-isvc__isvc-3642375d03"
    resp = load(runtime, model_id, "sklearn/mnist-svm.joblib", {"storage_key": "localMinIO"})

    local = mlserver.models_root / model_id / "mnist-svm.joblib"
    assert resp.sizeInBytes == int(local.stat().st_size * 1.25 + 0.999)
    out = infer_on_mlserver(mlserver, model_id)
    assert out.model_name == model_id
    assert out.outputs[0].datatype == "INT64"
    assert list(out.outputs[0].contents.int64_contents) == [8]
    settings = json.loads(
        (mlserver.models_root / "_mlserver_models" / model_id / "model-settings.json").read_text()
    )
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert runtime.modelSize(rt.ModelSizeRequest(modelId=model_id)).sizeInBytes == resp.sizeInBytes

    runtime.unloadModel(rt.UnloadModelRequest(modelId=model_id), timeout=30)
    assert not (mlserver.models_root / model_id).exists()
    with pytest.raises(grpc.RpcError) as err:
        infer_on_mlserver(mlserver, model_id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_default_storage_key_is_used_when_the_model_names_none(
    tmp_path: Path, start_adapter: StartAdapter, mlserver: MLServerProc, storage_config: Path
) -> None:
    (storage_config / "default").write_text((storage_config / "localMinIO").read_text())
    env = {
        "RUNTIME_PORT": str(mlserver.grpc_port),
        "ROOT_MODEL_DIR": str(mlserver.models_root),
        "STORAGE_CONFIG_DIR": str(storage_config),
    }
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)
        load(stub, "default-key-model", "sklearn/mnist-svm.joblib", {})
        assert list(
            infer_on_mlserver(mlserver, "default-key-model").outputs[0].contents.int64_contents
        ) == [8]


BAD_LOADS = [
    pytest.param(
        "model-unknown-key",
        "sklearn/mnist-svm.joblib",
        {"storage_key": "nope"},
        "sklearn",
        grpc.StatusCode.INVALID_ARGUMENT,
        "nope",
        id="unknown-storage-key",
    ),
    pytest.param(
        "model-no-bucket",
        "sklearn/mnist-svm.joblib",
        {"storage_key": "localMinIO", "storage_params": {"bucket": "missing-bucket"}},
        "sklearn",
        grpc.StatusCode.NOT_FOUND,
        "missing-bucket",
        id="bucket-missing",
    ),
    pytest.param(
        "model-no-object",
        "sklearn/nothing-here.joblib",
        {"storage_key": "localMinIO"},
        "sklearn",
        grpc.StatusCode.NOT_FOUND,
        "nothing-here",
        id="object-missing",
    ),
    pytest.param(
        "model-offline",
        "sklearn/mnist-svm.joblib",
        {"storage_key": "offline"},
        "sklearn",
        grpc.StatusCode.UNAVAILABLE,
        "127.0.0.1",
        id="endpoint-unreachable",
    ),
    pytest.param(
        "model-corrupt",
        "sklearn/corrupt.joblib",
        {"storage_key": "localMinIO"},
        "sklearn",
        grpc.StatusCode.INTERNAL,
        "model-corrupt",
        id="corrupt-model-file",
    ),
    pytest.param(
        "model-tf",
        "sklearn/mnist-svm.joblib",
        {"storage_key": "localMinIO"},
        "tensorflow",
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensorflow",
        id="unsupported-model-type",
    ),
    pytest.param(
        "model-escape",
        "../../etc/passwd",
        {"storage_key": "localMinIO"},
        "sklearn",
        grpc.StatusCode.INVALID_ARGUMENT,
        "escapes the model root",
        id="path-escape",
    ),
]


@pytest.mark.parametrize(("model_id", "path", "key", "model_type", "code", "message"), BAD_LOADS)
def test_bad_load_gets_clear_status_and_adapter_keeps_serving(
    runtime: rt_grpc.ModelRuntimeStub,
    adapter: AdapterProc,
    mlserver: MLServerProc,
    model_id: str,
    path: str,
    key: dict[str, object],
    model_type: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        load(runtime, model_id, path, key, model_type)
    assert err.value.code() == code, err.value.details()
    assert message in (err.value.details() or "")
    assert not (mlserver.models_root / model_id).exists(), "failed load left files behind"
    assert runtime_status(adapter.target).status == rt.RuntimeStatusResponse.READY
    good = load(
        runtime, f"{model_id}-then-good", "sklearn/mnist-svm.joblib", {"storage_key": "localMinIO"}
    )
    assert good.sizeInBytes > 0


class SlowHttpStorage:
    """An HTTP storage endpoint that takes far longer than the load timeout to answer."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=b"late")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._slow)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._started.set()

    def __enter__(self) -> SlowHttpStorage:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._started.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_load_timeout_is_deadline_exceeded_and_cleans_up(
    start_adapter: StartAdapter, mlserver: MLServerProc, storage_config: Path
) -> None:
    with SlowHttpStorage() as slow:
        (storage_config / "slow").write_text(
            json.dumps({"type": "http", "url": f"http://127.0.0.1:{slow.port}"})
        )
        env = {
            "RUNTIME_PORT": str(mlserver.grpc_port),
            "ROOT_MODEL_DIR": str(mlserver.models_root),
            "STORAGE_CONFIG_DIR": str(storage_config),
            "LOADTIME_TIMEOUT": "500",
        }
        with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
            runtime_status(proc.target)
            stub = rt_grpc.ModelRuntimeStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                load(stub, "slow-model", "m.joblib", {"storage_key": "slow"})
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "timed out after 500 ms" in (err.value.details() or "")
            assert not (mlserver.models_root / "slow-model").exists()
            assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.READY


def test_mlserver_down_means_starting_and_unavailable(
    start_adapter: StartAdapter, tmp_path: Path, storage_config: Path
) -> None:
    env = {
        "RUNTIME_PORT": str(free_port()),
        "ROOT_MODEL_DIR": str(tmp_path / "models"),
        "STORAGE_CONFIG_DIR": str(storage_config),
    }
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.STARTING
        stub = rt_grpc.ModelRuntimeStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            load(stub, "no-server-model", "sklearn/mnist-svm.joblib", {"storage_key": "localMinIO"})
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unavailable" in (err.value.details() or "")
        assert not (tmp_path / "models" / "no-server-model").exists()
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.STARTING


def test_runtime_status_purges_models_left_from_an_earlier_life(
    runtime: rt_grpc.ModelRuntimeStub, adapter: AdapterProc, mlserver: MLServerProc
) -> None:
    load(runtime, "leftover-model", "sklearn/mnist-svm.joblib", {"storage_key": "localMinIO"})
    assert infer_on_mlserver(mlserver, "leftover-model").outputs

    assert runtime_status(adapter.target).status == rt.RuntimeStatusResponse.READY

    assert not (mlserver.models_root / "leftover-model").exists()
    with pytest.raises(grpc.RpcError) as err:
        infer_on_mlserver(mlserver, "leftover-model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
