"""The operator when etcd goes away for a while: handlers retry, the status watch resyncs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection
from tests.fixtures.etcd import EtcdServer, make_data_dir, require_etcd, start_etcd
from tests.fixtures.kube import KubeAPI
from tests.fixtures.procs import ROOT, free_port
from tests.integration.operator.conftest import OperatorProc
from tests.integration.operator.test_operator import (
    SKLEARN,
    Cluster,
    condition,
    eventually,
    isvc_yaml,
)

pytestmark = pytest.mark.timeout(90)


class RestartableEtcd:
    """An etcd on fixed ports and data dir, so `stop()` then `start()` is an outage."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = make_data_dir()
        self.client_port, self.peer_port = free_port(), free_port()
        self.starts = 0
        self._stack = contextlib.ExitStack()
        self.server: EtcdServer | None = None

    def start(self) -> EtcdServer:
        self.starts += 1
        log = self.workdir / f"etcd-{self.starts}.log"
        self.server = self._stack.enter_context(
            start_etcd(
                log, data_dir=self.data, client_port=self.client_port, peer_port=self.peer_port
            )
        )
        return self.server

    def stop(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()


@pytest.fixture(scope="module")
def own_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableEtcd]:
    require_etcd()
    etcd = RestartableEtcd(tmp_path_factory.mktemp("etcd-outage"))
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()
        shutil.rmtree(etcd.data, ignore_errors=True)


@pytest.fixture
async def outage_cluster(
    kube_api: KubeAPI, own_etcd: RestartableEtcd, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, RestartableEtcd]]:
    kube_api.kubectl("apply", "--validate=false", "-f", str(ROOT / "config" / "runtimes"))
    assert own_etcd.server is not None
    proc = OperatorProc(kube_api, own_etcd.server, tmp_path)
    proc.start()
    kv = await EtcdKV.connect(EtcdConnection.from_endpoint(own_etcd.server.endpoint))
    try:
        yield Cluster(proc, kv), own_etcd
    finally:
        await kv.close()
        proc.stop()


async def _ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    status = await cluster.status(ns, name)
    return status if condition(status, "Ready") == "True" else None


async def test_etcd_outage_is_retried_and_converges(
    outage_cluster: tuple[Cluster, RestartableEtcd],
) -> None:
    cluster, etcd = outage_cluster
    ns = "outage"
    cluster.apply(ns, isvc_yaml("before", SKLEARN))
    before = await eventually(lambda: cluster.vmodel(ns, "before"))

    etcd.stop()  # etcd is gone
    cluster.apply(ns, isvc_yaml("during", SKLEARN))
    await asyncio.sleep(3)  # the operator tries, and fails, to register it
    etcd.start()

    during = await eventually(lambda: cluster.vmodel(ns, "during"), timeout_s=30)
    assert during.active_model == during.target_model
    # the status watch follows etcd again: router-reported loads show up
    await cluster.mark_loaded(ns, before.active_model)
    await cluster.mark_loaded(ns, during.active_model)
    for status in (
        await eventually(lambda: _ready(cluster, ns, "before"), timeout_s=20),
        await eventually(lambda: _ready(cluster, ns, "during"), timeout_s=20),
    ):
        assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"
    assert "etcd unavailable" in cluster.operator.logs()  # retried, not given up on
