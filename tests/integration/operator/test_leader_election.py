"""Two operator replicas against one API and one etcd: only the leader reconciles, and the
other takes over (within the 15 s lease) when the leader is killed."""

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


@pytest.mark.xfail(
    reason="known open race: both replicas add the finalizer at once, both patches conflict "
    "and kopf waits for a next event that may not come, so the isvc is not reconciled",
    strict=False,
)
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

    os.killpg(leader.pid, signal.SIGKILL)  # no clean release: the lease has to expire
    cluster.apply(ns, isvc_yaml("second", SKLEARN))

    vmodel = await eventually(lambda: cluster.vmodel(ns, "second"), timeout_s=30)
    assert vmodel.active_model == vmodel.target_model
    holder = await cluster.kv.get(key)
    assert holder is not None and holder.value.decode().endswith(f"-{follower.pid}")
    assert "Handler 'reconcile_isvc'" in follower.logs()
    await eventually(lambda: cluster.status(ns, "second"))  # the new leader reports
