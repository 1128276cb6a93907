"""MM_EVENT_LOOP: the router runs on uvloop by default and on asyncio when asked; either
way it serves, and its start-up line says which loop it runs. A value it does not know
stops it with the setting named."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.procs import VENV_PY
from tests.fixtures.router import RouterProc, echo_router
from tests.fixtures.runtimes import StubRuntimeProc

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]


@pytest.mark.parametrize(("setting", "runs_on"), [(None, "uvloop"), ("asyncio", "asyncio")])
def test_the_router_serves_on_the_loop_it_is_given(
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd_server: EtcdServer,
    setting: str | None,
    runs_on: str,
) -> None:
    env = {"MM_EVENT_LOOP": setting} if setting else {}
    with echo_router(start_router, start_stub_runtime, etcd_server.endpoint, env) as (router, c):
        answer = c.infer.ModelInfer(v2.ModelInferRequest(model_name="echo", id="a"), timeout=10)
        assert answer.model_name == "echo"
        assert f"(event loop: {runs_on})" in router.log.read_text()


def test_an_unknown_event_loop_stops_the_router_naming_the_setting() -> None:
    env = {**os.environ, "MM_INSTANCE_ID": "r-loop", "MM_EVENT_LOOP": "trio"}
    done = subprocess.run(
        [VENV_PY, "-m", "mmesh.router"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "MM_EVENT_LOOP" in done.stderr and "uvloop" in done.stderr
