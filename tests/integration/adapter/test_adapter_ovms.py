"""The adapter's OVMS backend (a real adapter process) against a fake OVMS REST API that
holds it to OVMS's documented contract and 2022.2's reload rules (tests/fixtures/fake_ovms.py):
the multi-model config file, `POST /v1/config/reload`, `GET /v1/config`, numeric version
directories, a reload failing as a whole when one model fails, error bodies.
No OVMS image runs here."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.fake_ovms import RELOAD_FAILED, RunningOvms
from tests.fixtures.runtimes import AdapterProc, runtime_status

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]
KEY = json.dumps({"storage_params": {"type": "pvc", "name": "models-pvc"}})


@pytest.fixture
def pvc(tmp_path: Path) -> Path:
    mounts = tmp_path / "pvc_mounts"
    claim = mounts / "models-pvc"
    (claim / "onnx").mkdir(parents=True)
    (claim / "onnx" / "mnist.onnx").write_bytes(b"\x08" * 8000)
    (claim / "ir" / "2").mkdir(parents=True)
    (claim / "ir" / "1").mkdir(parents=True)
    for v in ("1", "2"):
        (claim / "ir" / v / "face.xml").write_text("<net/>")
        (claim / "ir" / v / "face.bin").write_bytes(b"\x01" * 1000)
    (claim / "broken" / "1").mkdir(parents=True)
    (claim / "broken" / "1" / "notes.txt").write_text("no model here")
    return mounts


def adapter_env(ovms: RunningOvms, pvc: Path, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "storage").mkdir(exist_ok=True)
    return {
        "ADAPTER_SERVER_TYPE": "ovms",
        "RUNTIME_PORT": str(ovms.port),
        "ROOT_MODEL_DIR": str(ovms.models_root),
        "STORAGE_CONFIG_DIR": str(tmp_path / "storage"),
        "PVC_MOUNTS_DIR": str(pvc),
        "RUNTIME_VERSION": "2022.2",
    }


def load(stub: rt_grpc.ModelRuntimeStub, model_id: str, fmt: str, path: str) -> int:
    resp = stub.loadModel(
        rt.LoadModelRequest(modelId=model_id, modelType=fmt, modelPath=path, modelKey=KEY),
        timeout=30,
    )
    return int(resp.sizeInBytes)


def config_names(ovms: RunningOvms) -> list[str]:
    doc = json.loads(ovms.ovms.config_file.read_text())
    return [e["config"]["name"] for e in doc["model_config_list"]]


def test_ovms_load_unload_and_sizing(
    start_adapter: StartAdapter, fake_ovms: RunningOvms, pvc: Path, tmp_path: Path
) -> None:
    with (
        start_adapter(adapter_env(fake_ovms, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        status = runtime_status(proc.target)
        assert status.status == rt.RuntimeStatusResponse.READY
        assert status.capacityInBytes == 1024 * 1024 * 1024 - 128 * 1024 * 1024
        assert status.runtimeVersion == "2022.2"
        predict = status.methodInfos["tensorflow.serving.PredictionService/Predict"]
        assert list(predict.idInjectionPath) == [1, 1]
        assert list(
            status.methodInfos["inference.GRPCInferenceService/ModelInfer"].idInjectionPath
        ) == [1]
        stub = rt_grpc.ModelRuntimeStub(channel)

        assert load(stub, "mnist__isvc-0000000001", "onnx", "onnx/mnist.onnx") == 8000 * 1.25
        repo = fake_ovms.models_root / "_ovms_models"
        assert (repo / "mnist__isvc-0000000001" / "1" / "model.onnx").resolve() == (
            pvc / "models-pvc" / "onnx" / "mnist.onnx"
        )
        # both versions are pulled: 2 x (6 + 1000) bytes x 1.25
        assert load(stub, "face", "openvino_ir", "ir") == 2515
        assert (repo / "face" / "2" / "face.xml").exists()  # the highest version, as its own
        assert fake_ovms.ovms.available() == {"mnist__isvc-0000000001", "face"}
        assert config_names(fake_ovms) == ["face", "mnist__isvc-0000000001"]

        stub.unloadModel(rt.UnloadModelRequest(modelId="mnist__isvc-0000000001"), timeout=30)
        assert fake_ovms.ovms.available() == {"face"}
        assert config_names(fake_ovms) == ["face"]
        assert not (repo / "mnist__isvc-0000000001").exists()
        assert not (fake_ovms.models_root / "mnist__isvc-0000000001").exists()
        stub.unloadModel(rt.UnloadModelRequest(modelId="never-loaded"), timeout=30)


def test_ovms_failures_reach_the_router_with_ovms_words(
    start_adapter: StartAdapter, fake_ovms: RunningOvms, pvc: Path, tmp_path: Path
) -> None:
    with (
        start_adapter(adapter_env(fake_ovms, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)

        with pytest.raises(grpc.RpcError) as err:
            load(stub, "broken", "openvino_ir", "broken")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == (
            "OVMS did not load model broken: version 1 is LOADING (error_code 'UNKNOWN': "
            f"'UNKNOWN') (config reload answered HTTP 500: {RELOAD_FAILED})"
        )
        assert "broken" not in config_names(fake_ovms)  # taken back out of the config
        assert not (fake_ovms.models_root / "broken").exists()  # pulled files removed

        fake_ovms.ovms.fail_next_reload = True
        with pytest.raises(grpc.RpcError) as err:
            load(stub, "mnist", "onnx", "onnx/mnist.onnx")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert f"(config reload answered HTTP 500: {RELOAD_FAILED})" in (err.value.details() or "")

        assert load(stub, "mnist", "onnx", "onnx/mnist.onnx") == 10000  # the next reload works


def test_ovms_not_ready_until_its_rest_api_answers(
    start_adapter: StartAdapter, pvc: Path, tmp_path: Path
) -> None:
    from tests.fixtures.procs import free_port

    env = {
        "ADAPTER_SERVER_TYPE": "ovms",
        "RUNTIME_PORT": str(free_port()),  # nothing listens
        "ROOT_MODEL_DIR": str(tmp_path / "models"),
        "STORAGE_CONFIG_DIR": str(tmp_path),
        "PVC_MOUNTS_DIR": str(pvc),
    }
    with start_adapter(env) as proc:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.STARTING


def test_ovms_loads_arriving_together_share_one_config_reload(
    start_adapter: StartAdapter, fake_ovms: RunningOvms, pvc: Path, tmp_path: Path
) -> None:
    env = {**adapter_env(fake_ovms, pvc, tmp_path), "BATCH_WAIT_TIME_MIN_MS": "500"}
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)
        before = fake_ovms.ovms.reloads
        with ThreadPoolExecutor(max_workers=3) as pool:
            sizes = list(
                pool.map(lambda i: load(stub, f"m{i}", "onnx", "onnx/mnist.onnx"), range(3))
            )
        assert sizes == [10000] * 3
        assert fake_ovms.ovms.reloads - before == 1
        assert fake_ovms.ovms.available() == {"m0", "m1", "m2"}


def test_one_failing_model_fails_the_shared_reload_but_not_the_others(
    start_adapter: StartAdapter, fake_ovms: RunningOvms, pvc: Path, tmp_path: Path
) -> None:
    """OVMS answers a reload with one error for the whole config when any model fails; the
    loads batched into that reload are settled from each model's own status."""
    env = {**adapter_env(fake_ovms, pvc, tmp_path), "BATCH_WAIT_TIME_MIN_MS": "500"}
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)
        before = fake_ovms.ovms.reloads

        def attempt(model: tuple[str, str, str]) -> str:
            try:
                load(stub, *model)
            except grpc.RpcError as exc:
                return str(exc.details())
            return "loaded"

        batch = [("good", "onnx", "onnx/mnist.onnx"), ("broken", "openvino_ir", "broken")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            good, broken = pool.map(attempt, batch)
        assert good == "loaded"
        assert broken.startswith("OVMS did not load model broken: version 1 is LOADING")
        assert broken.endswith(f"(config reload answered HTTP 500: {RELOAD_FAILED})")
        # one shared reload, then one more that takes the failed model out of the config
        assert fake_ovms.ovms.reloads - before == 2
        assert fake_ovms.ovms.available() == {"good"}
        assert config_names(fake_ovms) == ["good"]
        assert load(stub, "after", "onnx", "onnx/mnist.onnx") == 10000  # reloads work again
