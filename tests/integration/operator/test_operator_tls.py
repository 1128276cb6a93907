"""The operator with an etcd that serves TLS only and requires a password, and with
`tls.secretName` / `tls.clientAuth` set in model-serving-config: it registers models in that
etcd, hands the runtime pods the same credentials, wires the router's TLS and reports an
https REST URL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection, from_mapping
from mmesh.core.ids import ModelId
from mmesh.core.records import KeyLayout
from tests.fixtures.etcd import SecureEtcd
from tests.fixtures.kube import KubeAPI
from tests.fixtures.procs import ROOT, VENV_PY, free_port, http_ok, running, wait_until
from tests.integration.operator.conftest import OPERATOR_NAMESPACE
from tests.integration.operator.test_operator import (
    TUTORIAL_ISVC,
    Cluster,
    condition,
    eventually,
)

pytestmark = pytest.mark.timeout(90)

SERVING_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: model-serving-config
data:
  config.yaml: |
    tls:
      secretName: mm-tls
      clientAuth: require
"""
TLS_DIR = "/opt/kserve/mmesh/tls"


@dataclass
class SecureOperator:
    """What `Cluster` needs of an operator: the API and the root prefix."""

    api: KubeAPI
    root_prefix: str
    log: Path


@pytest.fixture(scope="module")
def secure_operator(
    kube_api: KubeAPI, secure_etcd: SecureEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureOperator]:
    workdir = tmp_path_factory.mktemp("secure-operator")
    root_prefix = f"/optls-{uuid.uuid4().hex[:8]}"
    connection = workdir / "etcd_connection"
    connection.write_text(json.dumps(secure_etcd.secret(root_prefix=root_prefix)))
    kube_api.kubectl("apply", "--validate=false", "-f", str(ROOT / "config" / "runtimes"))
    kube_api.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-", stdin=SERVING_CONFIG)
    port = free_port()
    env = {
        "KUBECONFIG": str(kube_api.kubeconfig),
        "NAMESPACE": OPERATOR_NAMESPACE,
        "ETCD_CONNECTION": str(connection),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(port),
        "LOG_LEVEL": "DEBUG",
    }
    log = workdir / "operator.log"
    cmd: list[str | os.PathLike[str]] = [VENV_PY, "-m", "mmesh.operator"]
    with running(cmd, log=log, env=env, cwd=ROOT) as proc:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: http_ok(url), timeout_s=30, what="operator", proc=proc, log=log)
        yield SecureOperator(kube_api, root_prefix, log)


@pytest.fixture
async def cluster(
    secure_operator: SecureOperator, secure_etcd: SecureEtcd
) -> AsyncIterator[Cluster]:
    kv = await EtcdKV.connect(from_mapping(secure_etcd.secret()))
    try:
        yield Cluster(secure_operator, kv)  # type: ignore[arg-type]  # duck-typed operator
    finally:
        await kv.close()


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


async def test_tls_etcd_and_tls_serving(
    cluster: Cluster, secure_operator: SecureOperator, secure_etcd: SecureEtcd
) -> None:
    ns, name = OPERATOR_NAMESPACE, "example-sklearn-isvc"
    cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=TUTORIAL_ISVC)

    # registered in the TLS + password etcd
    vmodel = await eventually(lambda: cluster.vmodel(ns, name), timeout_s=30)
    model_id = vmodel.target_model

    # runtime pods get an etcd user of the namespace's own, under the namespace's prefix
    async def etcd_secret() -> dict[str, Any] | None:
        return await asyncio.to_thread(cluster.kube.get, "Secret", ns, "model-serving-etcd")

    # written by the namespace reconcile, which runs beside the registration
    secret = await eventually(etcd_secret, timeout_s=30)
    doc = json.loads(base64.b64decode(secret["data"]["etcd_connection"]))
    ns_root = f"{secure_operator.root_prefix}/mm_ns/{ns}"
    assert doc["root_prefix"] == ns_root
    assert doc["userid"] == f"mmesh-ns-{ns}"
    assert doc["password"] and doc["password"] != secure_etcd.password
    assert doc["certificate"] == secure_etcd.ca_pem
    assert doc["endpoints"] == secure_etcd.url
    await check_confined(from_mapping(doc), ns_root, model_id, secure_operator.root_prefix)

    # the router container serves TLS from the mounted secret and requires client certs
    async def mlserver() -> dict[str, Any] | None:
        return cluster.kube.get("Deployment", ns, "modelmesh-serving-mlserver-1.x")

    deployment = await eventually(mlserver, timeout_s=30)
    pod = deployment["spec"]["template"]["spec"]
    mm = next(c for c in pod["containers"] if c["name"] == "mm")
    env = env_of(mm)
    assert env["MM_TLS_KEY_CERT_PATH"] == f"{TLS_DIR}/tls.crt"
    assert env["MM_TLS_PRIVATE_KEY_PATH"] == f"{TLS_DIR}/tls.key"
    assert env["MM_TLS_CLIENT_AUTH"] == "REQUIRE"
    assert env["MM_TLS_TRUST_CERT_PATH"] == f"{TLS_DIR}/tls.crt,{TLS_DIR}/ca.crt"
    assert {"name": "tls-certs", "mountPath": TLS_DIR, "readOnly": True} in mm["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls-certs"]["secret"]["secretName"] == "mm-tls"

    # once a copy is loaded: REST is https, gRPC stays grpc://
    await cluster.mark_loaded(ns, model_id)

    async def ready() -> dict[str, Any] | None:
        status = await cluster.status(ns, name)
        return status if condition(status, "Ready") == "True" else None

    status = await eventually(ready, timeout_s=30)
    grpc_url = f"grpc://modelmesh-serving.{ns}:8033"
    assert status["url"] == grpc_url
    assert status["components"]["predictor"] == {
        "url": grpc_url,
        "grpcUrl": grpc_url,
        "restUrl": f"https://modelmesh-serving.{ns}:8008",
    }
    log = secure_operator.log.read_text()
    assert secure_etcd.password not in log
    assert doc["password"] not in log

    # later reconciles (here: every namespace's, on a ClusterServingRuntime change) keep the
    # namespace's user and password
    cluster.kubectl("annotate", "clusterservingruntime", "mlserver-1.x", "touched=1", "--overwrite")
    await asyncio.sleep(2)
    again = cluster.kube.get("Secret", ns, "model-serving-etcd")
    assert again is not None and again["data"] == secret["data"]


async def check_confined(
    connection: EtcdConnection, ns_root: str, model_id: ModelId, root_prefix: str
) -> None:
    """The namespace's credentials reach its own keys, and nothing else."""
    kv = await EtcdKV.connect(connection)
    try:
        layout = KeyLayout(ns_root, "modelmesh-serving")
        assert await kv.get(layout.model_key(model_id)) is not None
        await kv.put(layout.instances_prefix + "probe", b"{}")
        assert await kv.delete(layout.instances_prefix + "probe")
        for foreign in (f"{root_prefix}/mm_ns/other-ns/", f"{root_prefix}/"):
            with pytest.raises(StoreUnavailable, match="permission denied"):
                await kv.range_prefix(foreign)
    finally:
        await kv.close()
