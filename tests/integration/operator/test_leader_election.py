"""Two operator replicas against one API and one etcd: only the leader reconciles (creates,
and deletes, whose records it removes before the object goes), and the other takes over
(within the 15 s lease) when the leader is killed."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection
from mmesh.operator.leadership import leader_key
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kube import KubeAPI
from tests.fixtures.procs import ROOT
from tests.integration.operator.conftest import OperatorProc
from tests.integration.operator.test_operator import SKLEARN, Cluster, eventually, isvc_yaml

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def replicas(
    kube_api: KubeAPI, etcd_server: EtcdServer, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, OperatorProc, OperatorProc]]:
    kube_api.kubectl("apply", "--validate=false", "-f", str(ROOT / "config" / "runtimes"))
    first = OperatorProc(kube_api, etcd_server, tmp_path / "a")
    second = OperatorProc(kube_api, etcd_server, tmp_path / "b", root_prefix=first.root_prefix)
    for proc in (first, second):
        proc.workdir.mkdir()
        proc.start()  # in turn: the first one wins the election
    kv = await EtcdKV.connect(EtcdConnection.from_endpoint(etcd_server.endpoint))
    try:
        yield Cluster(first, kv), first, second
    finally:
        await kv.close()
        first.stop()
        second.stop()


async def test_only_the_leader_reconciles_and_a_follower_takes_over(
    replicas: tuple[Cluster, OperatorProc, OperatorProc],
) -> None:
    cluster, leader, follower = replicas
    key = leader_key(leader.root_prefix)
    holder = await cluster.kv.get(key)
    assert holder is not None and holder.value.decode().endswith(f"-{leader.pid}")

    ns = "leader"
    cluster.apply(ns, isvc_yaml("first", SKLEARN))
    await eventually(lambda: cluster.vmodel(ns, "first"), timeout_s=30)
    await eventually(lambda: cluster.status(ns, "first"))  # the leader reports
    assert "Handler 'reconcile_isvc'" in leader.logs()
    assert "Handler 'reconcile_isvc'" not in follower.logs()  # the follower stays idle
    assert "patched Deployment" not in follower.logs()
    assert "created Deployment" not in follower.logs()

    # a delete while both run: the follower must not let the object go before the leader
    # has removed its records (both hold the finalizer through the status daemon)
    cluster.apply(ns, isvc_yaml("brief", SKLEARN))
    brief = await eventually(lambda: cluster.vmodel(ns, "brief"), timeout_s=30)
    cluster.kubectl("delete", "-n", ns, "isvc", "brief", "--wait=false")

    async def records_gone() -> bool:
        return (
            await cluster.isvc(ns, "brief") is None
            and await cluster.vmodel(ns, "brief") is None
            and await cluster.model(ns, brief.active_model) is None
        )

    await eventually(records_gone, timeout_s=30)
    assert "InferenceService leader/brief unregistered" in leader.logs()

    os.killpg(leader.pid, signal.SIGKILL)  # no clean release: the lease has to expire
    cluster.apply(ns, isvc_yaml("second", SKLEARN))

    vmodel = await eventually(lambda: cluster.vmodel(ns, "second"), timeout_s=30)
    assert vmodel.active_model == vmodel.target_model
    holder = await cluster.kv.get(key)
    assert holder is not None and holder.value.decode().endswith(f"-{follower.pid}")
    assert "Handler 'reconcile_isvc'" in follower.logs()
    await eventually(lambda: cluster.status(ns, "second"))  # the new leader reports
