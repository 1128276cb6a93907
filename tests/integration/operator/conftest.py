"""Fixtures for the operator tests: the emulated Kubernetes API, and the real operator
process (`python -m mmesh.operator`) against it and the session etcd."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kube import KubeAPI
from tests.fixtures.procs import ROOT, VENV_PY, free_port, http_ok, running, wait_until

OPERATOR_NAMESPACE = "modelmesh-serving"


@dataclass
class OperatorProc:
    """The operator process; `restart()` stops it by pid and starts a new one."""

    api: KubeAPI
    etcd: EtcdServer
    workdir: Path
    root_prefix: str = field(default_factory=lambda: f"/optest-{uuid.uuid4().hex[:8]}")
    pid: int = 0
    starts: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        port = free_port()
        env = {
            "KUBECONFIG": str(self.api.kubeconfig),
            "NAMESPACE": OPERATOR_NAMESPACE,
            "ETCD_CONNECTION": json.dumps(
                {"endpoints": f"http://{self.etcd.endpoint}", "root_prefix": self.root_prefix}
            ),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(port),
            "LOG_LEVEL": "DEBUG",
            "CLAIMS_POLL_SECS": "5",
        }
        cmd: list[str | os.PathLike[str]] = [VENV_PY, "-m", "mmesh.operator"]
        proc = self._stack.enter_context(running(cmd, log=self.log, env=env, cwd=ROOT))
        self.pid = proc.pid
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: http_ok(url), timeout_s=60, what="operator", proc=proc, log=self.log)

    def stop(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return "\n".join(
            (self.workdir / f"operator-{i}.log").read_text() for i in range(1, self.starts + 1)
        )


@pytest.fixture(scope="module")
def operator(
    kube_api: KubeAPI,
    etcd_server: EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProc]:
    """The default runtimes applied, then the operator running (stopped by pid at the end)."""
    kube_api.kubectl("apply", "--validate=false", "-f", str(ROOT / "config" / "runtimes"))
    proc = OperatorProc(kube_api, etcd_server, tmp_path_factory.mktemp("operator"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
