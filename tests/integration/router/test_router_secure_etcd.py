"""A router whose etcd serves TLS only and requires a user and password: the connection
comes from an `etcd_connection` file, as the operator mounts it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import SecureEtcd
from tests.fixtures.router import RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc

MIB = 1024 * 1024
StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


def connection_file(tmp: Path, secret: dict[str, object]) -> Path:
    path = tmp / f"etcd-{uuid.uuid4().hex[:6]}" / "etcd_connection"
    path.parent.mkdir()
    path.write_text(json.dumps(secret))
    path.chmod(0o600)
    return path


def test_router_serves_with_a_tls_and_password_etcd(
    tmp_path: Path,
    secure_etcd: SecureEtcd,
    start_router: StartRouter,
    start_stub_runtime: StartStub,
) -> None:
    prefix = f"/secure-{uuid.uuid4().hex[:8]}"
    path = connection_file(tmp_path, secure_etcd.secret(root_prefix=prefix))
    with (
        start_stub_runtime("--capacity-bytes", str(12 * MIB), "--size-bytes", str(MIB)) as stub,
        start_router(
            etcd_endpoint=secure_etcd.server.endpoint,
            runtime_port=stub.port,
            root_prefix=prefix,
            env={"KV_STORE": f"etcd:{path}"},
        ) as router,
        clients(router) as c,
    ):
        info = mm.ModelInfo(type="stub", path="models/secure")
        c.mesh.registerModel(mm.RegisterModelRequest(modelId="secure-1", modelInfo=info))
        tensor = v2.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[2])
        )
        request = v2.ModelInferRequest(model_name="secure-1", inputs=[tensor])
        response = c.infer.ModelInfer(request, timeout=10)
        assert list(response.outputs[0].contents.fp32_contents) == [2.0]
        assert stub.stats()["loads"] == {"secure-1": 1}
        # the registry really is in the secure etcd, under the connection's root prefix
        assert f"{prefix}/mm/modelmesh-serving/registry/secure-1" in secure_etcd.etcdctl(
            "get", "--keys-only", "--prefix", f"{prefix}/"
        )
    assert secure_etcd.password not in router.log.read_text()


def test_router_with_a_wrong_password_stops_with_a_clear_message(
    tmp_path: Path,
    secure_etcd: SecureEtcd,
    start_router: StartRouter,
    start_stub_runtime: StartStub,
) -> None:
    wrong = "Wr0ng-pa55word"
    path = connection_file(tmp_path, secure_etcd.secret(password=wrong))
    with (
        start_stub_runtime() as stub,
        pytest.raises(RuntimeError, match="exited") as caught,
        start_router(
            etcd_endpoint=secure_etcd.server.endpoint,
            runtime_port=stub.port,
            env={"KV_STORE": f"etcd:{path}"},
        ),
    ):
        pass
    output = str(caught.value)
    assert "mmesh router: etcd authentication failed for user 'root'" in output
    assert wrong not in output
    assert "Traceback" not in output
