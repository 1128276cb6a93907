"""What a real router writes to its log: never a request payload or a request header, even
with MM_LOG_EACH_INVOKE on and the log level at DEBUG; never the etcd password, even when
the configuration is bad or etcd refuses the login."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.procs import VENV_PY
from tests.fixtures.router import RouterProc, echo_router
from tests.fixtures.runtimes import StubRuntimeProc

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]

PAYLOAD_MARKER = "PAYLOAD-MARKER-5e1f"
HEADER_MARKER = "HEADER-MARKER-93ab"
ETCD_PASSWORD = "ETCD-PASSWORD-MARKER-7c2d"


def marked_request(model: str) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="text",
        datatype="BYTES",
        shape=[1],
        contents=v2.InferTensorContents(bytes_contents=[PAYLOAD_MARKER.encode()]),
    )
    return v2.ModelInferRequest(
        model_name=model, id=f"id-{PAYLOAD_MARKER}", inputs=[tensor], raw_input_contents=[]
    )


def rest_post(router: RouterProc, path: str, body: object) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{router.rest_port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {HEADER_MARKER}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_payloads_and_headers_stay_out_of_the_log_with_every_invoke_logged(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_LOG_EACH_INVOKE": "true", "MM_LOG_LEVEL": "DEBUG"}
    with echo_router(start_router, start_stub_runtime, etcd_server.endpoint, env) as (router, c):
        metadata = [("authorization", f"Bearer {HEADER_MARKER}")]
        answer = c.infer.ModelInfer(marked_request("echo"), metadata=metadata, timeout=10)
        assert answer.outputs[0].contents.bytes_contents == [PAYLOAD_MARKER.encode()]
        with pytest.raises(grpc.RpcError):  # a failing call is logged too
            c.infer.ModelInfer(marked_request("nobody"), metadata=metadata, timeout=10)

        good = {"id": PAYLOAD_MARKER, "inputs": [_bytes_input(PAYLOAD_MARKER)]}
        status, text = rest_post(router, "/v2/models/echo/infer", good)
        assert status == 200 and PAYLOAD_MARKER in text
        bad = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [PAYLOAD_MARKER]}]
        }
        status, text = rest_post(router, "/v2/models/echo/infer", bad)
        assert status == 400 and PAYLOAD_MARKER in text  # the client sees what was wrong

        log = router.log.read_text()
    assert "ModelInfer OK" in log and "ModelInfer NOT_FOUND" in log  # each invoke was logged
    assert PAYLOAD_MARKER not in log
    assert HEADER_MARKER not in log


def _bytes_input(text: str) -> dict[str, object]:
    return {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}


def run_router(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MM_INSTANCE_ID": "hygiene", "MM_SVC_GRPC_PORT": "0", **env}
    return subprocess.run(
        [str(VENV_PY), "-m", "mmesh.router"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_kv_store_setting_is_reported_without_the_password() -> None:
    kv_store = "etcd3:" + json.dumps({"endpoints": "127.0.0.1:1", "password": ETCD_PASSWORD})
    done = run_router({"KV_STORE": kv_store, "MM_INTERNAL_GRPC_PORT": "not-a-port"})

    assert done.returncode != 0
    assert "KV_STORE" in done.stderr and "MM_INTERNAL_GRPC_PORT" in done.stderr
    assert ETCD_PASSWORD not in done.stdout + done.stderr


def test_a_refused_etcd_login_is_reported_without_the_password(etcd_server: EtcdServer) -> None:
    """The session etcd has no auth enabled, so any login fails: the failure must not
    repeat the password."""
    connection = {
        "endpoints": f"http://{etcd_server.endpoint}",
        "userid": "root",
        "password": ETCD_PASSWORD,
    }
    done = run_router({"KV_STORE": "etcd:" + json.dumps(connection), "INTERNAL_GRPC_PORT": "1"})

    assert done.returncode != 0
    assert "root" in done.stdout + done.stderr  # the failure names the user
    assert ETCD_PASSWORD not in done.stdout + done.stderr
