"""The adapter's triton backend against a fake Triton that checks what Triton checks.

No Triton server installs from the package registries here, so this fake speaks Triton's
repository API (RepositoryIndex / RepositoryModelLoad / RepositoryModelUnload) and, on load,
reads the model repository the adapter wrote: `config.pbtxt` naming the model and a version
directory holding the model file, as Triton's explicit model-control mode requires.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import grpc_predict_v2_pb2_grpc as v2_grpc
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.procs import free_port
from tests.fixtures.runtimes import AdapterProc, runtime_status

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]


class FakeTriton(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: dict[str, str] = {}
        self.lock = threading.Lock()

    def ServerReady(self, request, context):
        return v2.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return v2.ServerMetadataResponse(name="triton", version="2.40.0")

    def RepositoryIndex(self, request, context):
        with self.lock:
            return v2.RepositoryIndexResponse(
                models=[
                    v2.RepositoryIndexResponse.ModelIndex(name=n, state="READY")
                    for n in self.loaded
                ]
            )

    def RepositoryModelLoad(self, request, context):
        model_dir = self.repository / request.model_name
        config = model_dir / "config.pbtxt"
        if not config.is_file():
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"failed to load '{request.model_name}', no config.pbtxt",
            )
        text = config.read_text()
        if f'name: "{request.model_name}"' not in text:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config name mismatch")
        versions = [p for p in model_dir.iterdir() if p.name.isdigit()]
        if not versions or not any(f.exists() for v in versions for f in v.iterdir()):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no version directory")
        with self.lock:
            self.loaded[request.model_name] = text
        return v2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        with self.lock:
            if self.loaded.pop(request.model_name, None) is None:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"failed to unload '{request.model_name}', no model found",
                )
        return v2.RepositoryModelUnloadResponse()


@pytest.fixture
def fake_triton(tmp_path: Path) -> Iterator[tuple[FakeTriton, int, Path]]:
    models_root = tmp_path / "models"
    triton = FakeTriton(models_root / "_triton_models")
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(triton, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield triton, port, models_root
    server.stop(0)


@pytest.fixture
def pvc_models(tmp_path: Path) -> Path:
    mounts = tmp_path / "pvc_mounts"
    onnx = mounts / "models-pvc" / "onnx" / "mnist.onnx"
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"\x08\x07" * 5000)
    native = mounts / "models-pvc" / "native"
    (native / "3").mkdir(parents=True)
    (native / "3" / "model.onnx").write_bytes(b"onnx")
    (native / "config.pbtxt").write_text(
        'name: "whatever"\nbackend: "onnxruntime"\ninput [\n  {\n    name: "in"\n  }\n]\n'
    )
    return mounts


def test_triton_layout_load_and_unload(
    start_adapter: StartAdapter, fake_triton, pvc_models: Path, tmp_path: Path
) -> None:
    triton, port, models_root = fake_triton
    (tmp_path / "storage").mkdir()
    env = {
        "ADAPTER_SERVER_TYPE": "triton",
        "RUNTIME_PORT": str(port),
        "ROOT_MODEL_DIR": str(models_root),
        "STORAGE_CONFIG_DIR": str(tmp_path / "storage"),
        "PVC_MOUNTS_DIR": str(pvc_models),
    }
    key = json.dumps({"storage_params": {"type": "pvc", "name": "models-pvc"}})
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        assert runtime_status(proc.target).runtimeVersion == "triton-2.40.0"
        stub = rt_grpc.ModelRuntimeStub(channel)

        resp = stub.loadModel(
            rt.LoadModelRequest(
                modelId="mnist-onnx", modelType="onnx", modelPath="onnx/mnist.onnx", modelKey=key
            )
        )
        assert resp.sizeInBytes == 12500  # 10000 bytes on disk x 1.25
        repo = models_root / "_triton_models" / "mnist-onnx"
        assert (repo / "config.pbtxt").read_text() == (
            'name: "mnist-onnx"\nbackend: "onnxruntime"\n'
        )
        assert (repo / "1" / "model.onnx").resolve() == (
            pvc_models / "models-pvc" / "onnx" / "mnist.onnx"
        )
        assert (models_root / "mnist-onnx" / "mnist.onnx").is_symlink()  # PVC: link, no copy

        stub.loadModel(
            rt.LoadModelRequest(
                modelId="native", modelType="onnx", modelPath="native", modelKey=key
            )
        )
        assert triton.loaded["native"].startswith('name: "native"\n')
        assert (models_root / "_triton_models" / "native" / "3" / "model.onnx").exists()

        stub.unloadModel(rt.UnloadModelRequest(modelId="mnist-onnx"))
        assert "mnist-onnx" not in triton.loaded
        assert not repo.exists() and not (models_root / "mnist-onnx").exists()
        assert (pvc_models / "models-pvc" / "onnx" / "mnist.onnx").exists()  # source untouched

        with pytest.raises(grpc.RpcError) as err:
            stub.loadModel(
                rt.LoadModelRequest(
                    modelId="sk", modelType="sklearn", modelPath="onnx/mnist.onnx", modelKey=key
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'sklearn' is not supported by triton" in (err.value.details() or "")
