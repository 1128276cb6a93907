"""The adapter's TorchServe backend (a real adapter process) against a fake TorchServe
management API that holds it to TorchServe's REST contract (tests/fixtures/fake_torchserve.py):
started from the config the adapter writes, archives in the model store, register /
unregister / list / describe, worker memory only after a metrics pass, error bodies.
No TorchServe image runs here."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.fake_torchserve import WORKER_MEMORY, RunningTorchServe, make_mar
from tests.fixtures.runtimes import AdapterProc, runtime_status

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]
KEY = json.dumps({"storage_params": {"type": "pvc", "name": "models-pvc"}})
PREDICTIONS = "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


@pytest.fixture
def pvc(tmp_path: Path) -> Path:
    mounts = tmp_path / "pvc_mounts"
    claim = mounts / "models-pvc"
    make_mar(claim / "mnist.mar", "mnist")
    make_mar(claim / "in-dir" / "resnet.mar", "resnet")
    make_mar(claim / "bad.mar", "bad", handler="fail")
    unpacked = claim / "unpacked"
    (unpacked / "MAR-INF").mkdir(parents=True)
    (unpacked / "MAR-INF" / "MANIFEST.json").write_text(
        json.dumps({"model": {"modelName": "u", "modelVersion": "1.0", "handler": "h"}})
    )
    return mounts


def adapter_env(ts: RunningTorchServe, pvc: Path, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "storage").mkdir(exist_ok=True)
    return {
        "ADAPTER_SERVER_TYPE": "torchserve",
        "RUNTIME_PORT": str(ts.port),
        "RUNTIME_DATA_ENDPOINT": "port:7070",
        "ROOT_MODEL_DIR": str(ts.models_root),
        "STORAGE_CONFIG_DIR": str(tmp_path / "storage"),
        "PVC_MOUNTS_DIR": str(pvc),
        "TORCHSERVE_METRIC_INTERVAL_SECS": "1",  # worker memory measured every second
    }


def load(stub: rt_grpc.ModelRuntimeStub, model_id: str, path: str) -> int:
    resp = stub.loadModel(
        rt.LoadModelRequest(
            modelId=model_id, modelType="pytorch-mar", modelPath=path, modelKey=KEY
        ),
        timeout=30,
    )
    return int(resp.sizeInBytes)


def test_torchserve_register_unregister_and_sizing(
    start_adapter: StartAdapter, fake_torchserve: RunningTorchServe, pvc: Path, tmp_path: Path
) -> None:
    ts = fake_torchserve.ts
    with (
        start_adapter(adapter_env(fake_torchserve, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        config = (ts.store / "mmconfig.properties").read_text()  # written before TorchServe starts
        assert f"management_address=http://127.0.0.1:{fake_torchserve.port}" in config
        assert "grpc_inference_port=7070" in config
        assert "metric_time_interval=1" in config

        status = runtime_status(proc.target)
        assert status.status == rt.RuntimeStatusResponse.READY
        assert list(status.methodInfos[PREDICTIONS].idInjectionPath) == [1]
        stub = rt_grpc.ModelRuntimeStub(channel)

        # size = the worker's memory as TorchServe reports it after its next metrics pass,
        # plus 10 %
        assert load(stub, "mnist__isvc-0123456789", "mnist.mar") == int(WORKER_MEMORY * 1.1)
        link = ts.store / "mnist__isvc-0123456789.mar"
        assert link.resolve() == pvc / "models-pvc" / "mnist.mar"
        assert ts.registrations[-1] == {
            "url": "mnist__isvc-0123456789.mar",
            "model_name": "mnist__isvc-0123456789",
            "initial_workers": "1",
            "synchronous": "true",
        }
        load(stub, "resnet", "in-dir")  # a directory holding one archive
        assert (ts.store / "resnet.mar").resolve() == pvc / "models-pvc" / "in-dir" / "resnet.mar"
        load(stub, "unpacked", "unpacked")  # an unpacked archive directory
        assert ts.registrations[-1]["url"] == "unpacked"
        assert set(ts.models) == {"mnist__isvc-0123456789", "resnet", "unpacked"}

        stub.unloadModel(rt.UnloadModelRequest(modelId="mnist__isvc-0123456789"), timeout=30)
        assert "mnist__isvc-0123456789" not in ts.models
        assert not link.exists() and not link.is_symlink()
        assert not (fake_torchserve.models_root / "mnist__isvc-0123456789").exists()
        # unknown to TorchServe (404 ModelNotFoundException) is not an unload failure
        stub.unloadModel(rt.UnloadModelRequest(modelId="never-registered"), timeout=30)


def test_a_model_torchserve_has_not_measured_in_time_is_sized_from_disk(
    start_adapter: StartAdapter, fake_torchserve: RunningTorchServe, pvc: Path, tmp_path: Path
) -> None:
    """TorchServe's default metrics interval (60 s) is longer than a load may wait (half the
    load timeout): the size is the archive's bytes x MODELSIZE_MULTIPLIER."""
    env = {
        **adapter_env(fake_torchserve, pvc, tmp_path),
        "TORCHSERVE_METRIC_INTERVAL_SECS": "60",
        "LOADTIME_TIMEOUT": "3000",
    }
    with (
        start_adapter(env) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)
        on_disk = (pvc / "models-pvc" / "mnist.mar").stat().st_size
        assert load(stub, "mnist", "mnist.mar") == math.ceil(on_disk * 1.25)
        assert "mnist" in fake_torchserve.ts.models
    assert "reported no worker memory for mnist within 1.5 s" in proc.log.read_text()


def test_torchserve_failure_bodies_reach_the_router(
    start_adapter: StartAdapter, fake_torchserve: RunningTorchServe, pvc: Path, tmp_path: Path
) -> None:
    ts = fake_torchserve.ts
    with (
        start_adapter(adapter_env(fake_torchserve, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        runtime_status(proc.target)
        stub = rt_grpc.ModelRuntimeStub(channel)

        with pytest.raises(grpc.RpcError) as err:
            load(stub, "bad", "bad.mar")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == (
            "torchserve did not register model bad: HTTP 500: InternalServerException: "
            "Failed to start workers for model bad version: 1.0"
        )
        assert not (ts.store / "bad.mar").is_symlink()
        assert not (fake_torchserve.models_root / "bad").exists()

        ts.models["taken"] = {"url": "elsewhere.mar", "workers": 1}  # registered behind our back
        with pytest.raises(grpc.RpcError) as err:
            load(stub, "taken", "mnist.mar")
        assert err.value.details() == (
            "torchserve did not register model taken: HTTP 409: ConflictStatusException: "
            "Model version 1.0 is already registered for model taken"
        )

        with pytest.raises(grpc.RpcError) as err:
            load(stub, "not-an-archive", "unpacked/MAR-INF")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must be a .mar archive" in (err.value.details() or "")


def test_runtime_status_clears_what_an_earlier_life_left(
    start_adapter: StartAdapter, fake_torchserve: RunningTorchServe, pvc: Path, tmp_path: Path
) -> None:
    ts = fake_torchserve.ts
    ts.store.mkdir(parents=True)
    for i in range(3):
        ts.models[f"old-{i}"] = {"url": f"old-{i}.mar", "workers": 1}
    shutil.copy(pvc / "models-pvc" / "mnist.mar", ts.store / "leftover.mar")
    env = adapter_env(fake_torchserve, pvc, tmp_path)
    with start_adapter(env) as proc:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.READY
    assert ts.models == {}
    assert sorted(p.name for p in ts.store.iterdir()) == ["mmconfig.properties"]
