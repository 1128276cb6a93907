"""Storage-helper mode: a real adapter process (ADAPTER_SERVER_TYPE=puller) in front of a
real stub runtime process that serves its own mmesh.ModelRuntime and insists on local files."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.procs import free_port
from tests.fixtures.runtimes import AdapterProc, StubRuntimeProc, runtime_status

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]
CAPACITY = 300_000_000


@pytest.fixture
def pvc(tmp_path: Path) -> Path:
    mounts = tmp_path / "pvc_mounts"
    (mounts / "claim" / "custom").mkdir(parents=True)
    (mounts / "claim" / "custom" / "weights.bin").write_bytes(b"\x07" * 3000)
    (mounts / "claim" / "custom" / "schema.json").write_text('{"inputs": []}')
    return mounts


def puller_env(stub: StubRuntimeProc, pvc: Path, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "storage").mkdir(exist_ok=True)
    (tmp_path / "storage" / "claim-key").write_text(
        json.dumps({"type": "pvc", "name": "claim", "note": "storage secret"})
    )
    env = {
        "ADAPTER_SERVER_TYPE": "puller",
        "MODEL_SERVER_ENDPOINT": f"port:{stub.port}",
        "ROOT_MODEL_DIR": str(tmp_path / "models"),
        "STORAGE_CONFIG_DIR": str(tmp_path / "storage"),
        "PVC_MOUNTS_DIR": str(pvc),
    }
    return env


def key(**extra: object) -> str:
    return json.dumps({"storage_key": "claim-key", "model_type": {"name": "custom"}, **extra})


def test_puller_pulls_then_hands_the_runtime_local_files(
    start_adapter: StartAdapter, start_stub_runtime: StartStub, pvc: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    with (
        start_stub_runtime(
            "--require-local-files", "--capacity-bytes", str(CAPACITY), "--size-bytes", "777"
        ) as stub,
        start_adapter(puller_env(stub, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        status = runtime_status(proc.target)
        assert status.status == rt.RuntimeStatusResponse.READY
        assert status.capacityInBytes == CAPACITY  # the runtime's own, passed through
        assert status.runtimeVersion == "stub-1"
        assert "inference.GRPCInferenceService/ModelInfer" in status.methodInfos
        client = rt_grpc.ModelRuntimeStub(channel)

        resp = client.loadModel(
            rt.LoadModelRequest(
                modelId="m1",
                modelType="custom",
                modelPath="custom",
                modelKey=key(schema_path="custom/schema.json", stub={"size": 4242}),
            ),
            timeout=30,
        )
        assert resp.sizeInBytes == 4242  # the runtime's answer, passed through
        got = stub.stats()["received"]["m1"]
        assert got["path"] == str(models / "m1" / "custom")
        assert got["bytes"] == 3000 + len('{"inputs": []}')
        sent_key = json.loads(got["key"])
        assert "storage_key" not in sent_key and "storage_params" not in sent_key
        assert sent_key["disk_size_bytes"] == got["bytes"]
        assert sent_key["schema_path"] == str(models / "m1" / "_schema.json")
        assert sent_key["stub"] == {"size": 4242}
        assert (models / "m1" / "custom").is_symlink()  # a PVC is linked, not copied

        assert client.modelSize(rt.ModelSizeRequest(modelId="m1"), timeout=5).sizeInBytes == 4242
        predicted = client.predictModelSize(
            rt.PredictModelSizeRequest(modelId="m2", modelKey=key()), timeout=5
        )
        assert predicted.sizeInBytes == 777  # the runtime's prediction

        client.unloadModel(rt.UnloadModelRequest(modelId="m1"), timeout=30)
        assert stub.stats()["unloads"]["m1"] == 1
        assert "m1" not in stub.stats()["loaded"]
        assert not (models / "m1").exists()


def test_puller_passes_runtime_errors_through_and_cleans_up(
    start_adapter: StartAdapter, start_stub_runtime: StartStub, pvc: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    with (
        start_stub_runtime("--require-local-files") as stub,
        start_adapter(puller_env(stub, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        runtime_status(proc.target)
        client = rt_grpc.ModelRuntimeStub(channel)

        with pytest.raises(grpc.RpcError) as err:
            client.loadModel(
                rt.LoadModelRequest(
                    modelId="bad", modelPath="custom", modelKey=key(stub={"fail": "bad weights"})
                ),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == (
            f"model runtime at 127.0.0.1:{stub.port} failed loadModel of bad: bad weights"
        )
        assert not (models / "bad").exists()

        with pytest.raises(grpc.RpcError) as err:
            client.modelSize(rt.ModelSizeRequest(modelId="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # the runtime's code

        with pytest.raises(grpc.RpcError) as err:
            client.loadModel(
                rt.LoadModelRequest(modelId="gone", modelPath="no/such/dir", modelKey=key()),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # the pull failed; no runtime call
        assert "gone" not in stub.stats()["loads"]


def test_puller_reports_starting_until_the_runtime_answers(
    start_adapter: StartAdapter, pvc: Path, tmp_path: Path
) -> None:
    env = {
        "ADAPTER_SERVER_TYPE": "puller",
        "MODEL_SERVER_ENDPOINT": f"port:{free_port()}",
        "ROOT_MODEL_DIR": str(tmp_path / "models"),
        "STORAGE_CONFIG_DIR": str(tmp_path),
        "PVC_MOUNTS_DIR": str(pvc),
    }
    with start_adapter(env) as proc:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.STARTING


def test_runtime_ready_again_means_the_puller_forgets_its_models(
    start_adapter: StartAdapter, start_stub_runtime: StartStub, pvc: Path, tmp_path: Path
) -> None:
    """A restarted router asks runtimeStatus again: models it no longer knows must go."""
    models = tmp_path / "models"
    with (
        start_stub_runtime() as stub,
        start_adapter(puller_env(stub, pvc, tmp_path)) as proc,
        grpc.insecure_channel(proc.target) as channel,
    ):
        runtime_status(proc.target)
        client = rt_grpc.ModelRuntimeStub(channel)
        for model_id in ("a", "b"):
            client.loadModel(
                rt.LoadModelRequest(modelId=model_id, modelPath="custom", modelKey=key()),
                timeout=30,
            )
        assert (models / "a").exists() and (models / "b").exists()

        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.READY
        assert stub.stats()["unloads"] == {"a": 1, "b": 1}
        assert not (models / "a").exists() and not (models / "b").exists()
