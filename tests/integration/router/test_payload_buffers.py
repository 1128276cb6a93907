"""MM_KEEP_PAYLOAD_BUFFERS: on by default the router says so at start-up and serves large
requests; turned off, it says nothing of it and serves them all the same."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.router import RouterProc, echo_router
from tests.fixtures.runtimes import StubRuntimeProc

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]
SAID = "payload buffers up to 32 MiB reuse freed heap memory"


@pytest.mark.parametrize(("setting", "says_so"), [(None, True), ("false", False)])
def test_large_requests_are_served_whether_buffers_are_kept_or_not(
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd_server: EtcdServer,
    setting: str | None,
    says_so: bool,
) -> None:
    env = {"MM_KEEP_PAYLOAD_BUFFERS": setting} if setting else {}
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x",
        datatype="BYTES",
        shape=[1],
        contents=v2.InferTensorContents(bytes_contents=[b"\x07" * (2 << 20)]),
    )
    with echo_router(start_router, start_stub_runtime, etcd_server.endpoint, env) as (router, c):
        for n in range(5):
            request = v2.ModelInferRequest(model_name="echo", id=f"r{n}", inputs=[tensor])
            answer = c.infer.ModelInfer(request, timeout=10)
            assert answer.model_name == "echo" and answer.id == f"r{n}"
        assert (SAID in router.log.read_text()) is says_so
