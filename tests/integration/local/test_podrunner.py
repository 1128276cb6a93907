"""The pod runner and the port-forward against the emulated API, with a tiny web server as the
container: pods start with their Secret mounted, turn ready, restart after a crash, roll to a new
template, scale to zero, and a forwarded port reaches every ready pod."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from mmesh.local.kube import LocalKube
from mmesh.local.podrunner import PodRunner
from mmesh.local.portforward import ServiceForward
from tests.fixtures.kube import KubeAPI

pytestmark = pytest.mark.timeout(120)

NS = "modelmesh-serving"
# Serves the mounted Secret folder on the pod's own address; $(POD_IP) is the pod's address.
SERVER = ["python", "-m", "http.server", "8000", "--bind", "$(POD_IP)", "--directory", "/etc/conf"]


def deployment(replicas: int, version: str) -> dict[str, Any]:
    container = {
        "name": "web",
        "image": "mmesh-router:latest",
        "command": SERVER,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "VERSION", "value": version},
        ],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/greeting", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [{"name": "conf", "secret": {"secretName": "conf"}}],
                },
            },
        },
    }


@pytest.fixture
async def runner(kube_api: KubeAPI, tmp_path: Path) -> AsyncIterator[tuple[PodRunner, LocalKube]]:
    kube = LocalKube(kube_api.kubeconfig)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "conf", "namespace": NS},
        "data": {"greeting": base64.b64encode(b"hello from a secret").decode()},
    }
    await asyncio.to_thread(kube.apply, secret)
    block = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    pod_runner = PodRunner(
        kube, tmp_path, {"mmesh-router": str(Path(sys.executable).parent)}, block
    )
    stop = asyncio.Event()
    task = asyncio.create_task(pod_runner.run(stop))
    try:
        yield pod_runner, kube
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        with contextlib.suppress(ApiException):  # not every test makes one
            kube.apps.delete_namespaced_deployment("web", NS)
        kube.close()


def api_pods(kube: LocalKube) -> list[dict[str, Any]]:
    raw = kube.core.list_namespaced_pod(NS, _preload_content=False)
    return [p for p in json.loads(raw.data)["items"] if p["metadata"]["name"].startswith("web-")]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(what)


def ready_pods(kube: LocalKube) -> list[dict[str, Any]]:
    return [
        p
        for p in api_pods(kube)
        if all(c["ready"] for c in p["status"].get("containerStatuses") or [{"ready": False}])
        and not p["metadata"].get("deletionTimestamp")
    ]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


async def test_pods_start_ready_with_their_secret_and_report_status(
    runner: tuple[PodRunner, LocalKube],
) -> None:
    _, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment(2, "v1"))
    await until(lambda: len(ready_pods(kube)) == 2, "2 ready pods")

    pods = ready_pods(kube)
    addresses = {p["status"]["podIP"] for p in pods}
    assert len(addresses) == 2
    for address in addresses:
        assert fetch(f"http://{address}:8000/greeting") == "hello from a secret"
    assert {p["metadata"]["labels"]["app"] for p in pods} == {"web"}
    await until(
        lambda: (kube.apps.read_namespaced_deployment("web", NS).status.ready_replicas or 0) == 2,
        "deployment status readyReplicas 2",
    )


async def test_a_crashed_container_is_restarted(runner: tuple[PodRunner, LocalKube]) -> None:
    pod_runner, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment(1, "v1"))
    await until(lambda: len(ready_pods(kube)) == 1, "1 ready pod")
    name = ready_pods(kube)[0]["metadata"]["name"]

    pid = pod_runner.kill_container(name, "web")
    pidfile = Path(pod_runner.pods[name].folder / "pids" / "web")

    def restarted() -> bool:
        pods = ready_pods(kube)
        return bool(pods) and pods[0]["status"]["containerStatuses"][0]["restartCount"] == 1

    await until(restarted, "restartCount 1 and ready again")
    assert int(await asyncio.to_thread(pidfile.read_text)) != pid
    assert ready_pods(kube)[0]["metadata"]["name"] == name


async def test_a_new_template_replaces_the_pods_then_zero_replicas_stops_them(
    runner: tuple[PodRunner, LocalKube],
) -> None:
    pod_runner, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment(2, "v1"))
    await until(lambda: len(ready_pods(kube)) == 2, "2 ready pods")
    first = {p["metadata"]["name"] for p in ready_pods(kube)}

    patch = {"spec": deployment(2, "v2")["spec"]}
    await asyncio.to_thread(kube.apps.patch_namespaced_deployment, "web", NS, patch)

    def rolled() -> bool:
        names = {p["metadata"]["name"] for p in api_pods(kube)}
        return len(ready_pods(kube)) == 2 and not names & first

    await until(rolled, "2 new pods and the old ones gone")
    for name in {p["metadata"]["name"] for p in api_pods(kube)}:
        env = pod_runner.pods[name].containers[0].plan
        assert env is not None and env.env["VERSION"] == "v2"

    await asyncio.to_thread(
        kube.apps.patch_namespaced_deployment, "web", NS, {"spec": {"replicas": 0}}
    )
    await until(lambda: not api_pods(kube) and not pod_runner.pods, "no pods left")


async def test_the_forwarded_port_reaches_every_ready_pod(
    runner: tuple[PodRunner, LocalKube],
) -> None:
    pod_runner, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment(2, "v1"))
    await until(lambda: len(ready_pods(kube)) == 2, "2 ready pods")

    def endpoints() -> list[tuple[str, int]]:
        return [(ip, 8000) for ip in pod_runner.ready_addresses(NS, {"app": "web"})]

    forward = ServiceForward(endpoints, "web")
    port = await forward.start("127.0.0.1", 0)
    try:
        answers = [
            await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/greeting") for _ in range(4)
        ]
    finally:
        await forward.close()
    assert answers == ["hello from a secret"] * 4
    assert len(endpoints()) == 2


async def test_no_ready_pod_closes_the_connection(runner: tuple[PodRunner, LocalKube]) -> None:
    forward = ServiceForward(list, "nothing")
    port = await forward.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(), 15)  # after the forwarder gives up
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed, no bytes from anywhere
        writer.close()
    finally:
        await forward.close()


async def test_a_pod_deleted_through_the_api_is_stopped_and_replaced(
    runner: tuple[PodRunner, LocalKube],
) -> None:
    pod_runner, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, deployment(1, "v1"))
    await until(lambda: len(ready_pods(kube)) == 1, "1 ready pod")
    name = ready_pods(kube)[0]["metadata"]["name"]
    proc = pod_runner.pods[name].containers[0].proc
    assert proc is not None

    await asyncio.to_thread(kube.core.delete_namespaced_pod, name, NS)
    # as with a kubelet: the object stays, Terminating, until its containers have stopped
    marked = [p for p in api_pods(kube) if p["metadata"]["name"] == name]
    assert marked and marked[0]["metadata"].get("deletionTimestamp"), marked

    def replaced() -> bool:
        pods = ready_pods(kube)
        return len(pods) == 1 and pods[0]["metadata"]["name"] != name

    await until(replaced, "a replacement pod, ready")
    await until(lambda: proc.poll() is not None, "the deleted pod's process stopped")
    await until(
        lambda: name not in {p["metadata"]["name"] for p in api_pods(kube)},
        "the deleted pod's object gone once it stopped",
    )
    assert name not in pod_runner.pods


def claim_deployment() -> dict[str, Any]:
    """A pod serving the parent folder of a claim's mount path (as the adapter is given
    PVC_MOUNTS_DIR, the parent of /pvc_mounts/<claim>)."""
    doc = deployment(1, "v1")
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [*SERVER[:-1], "/data/claims"]
    container["readinessProbe"]["httpGet"]["path"] = "/models/greeting"
    container["volumeMounts"] = [
        {"name": "claim", "mountPath": "/data/claims/models", "readOnly": True}
    ]
    doc["spec"]["template"]["spec"]["volumes"] = [
        {"name": "claim", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    ]
    return doc


async def test_a_claim_is_a_folder_and_its_pod_waits_for_it(
    runner: tuple[PodRunner, LocalKube],
) -> None:
    _, kube = runner
    await asyncio.to_thread(kube.apps.create_namespaced_deployment, NS, claim_deployment())

    def waiting() -> bool:
        pods = api_pods(kube)
        statuses = pods[0]["status"].get("containerStatuses") or [] if pods else []
        state = statuses[0]["state"].get("waiting") or {} if statuses else {}
        return state.get("message") == 'persistentvolumeclaim "models" not found'

    await until(waiting, "the pod waiting for its claim")

    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": NS},
        "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    await asyncio.to_thread(kube.core.create_namespaced_persistent_volume_claim, NS, claim)

    def bound() -> dict[str, Any] | None:
        raw = kube.core.read_namespaced_persistent_volume_claim(
            "models", NS, _preload_content=False
        )
        found: dict[str, Any] = json.loads(raw.data)
        return found if found.get("status", {}).get("phase") == "Bound" else None

    await until(lambda: bound() is not None, "the claim Bound")
    found = await asyncio.to_thread(bound)
    assert found is not None and found["status"]["capacity"] == {"storage": "2Gi"}
    folder = Path(found["metadata"]["annotations"]["local.mmesh/path"])
    assert folder.parts[-3:] == ("pvcs", NS, "models")
    (folder / "greeting").write_text("hello from a claim")

    await until(lambda: len(ready_pods(kube)) == 1, "1 ready pod")
    address = ready_pods(kube)[0]["status"]["podIP"]
    assert fetch(f"http://{address}:8000/models/greeting") == "hello from a claim"
