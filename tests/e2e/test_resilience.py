"""Runtime pods failing under a served model, seen by a user, on the local cluster.

The tutorial's InferenceService is served by the 2 pods of `mlserver-1.x`. A container of the
pod holding the model is SIGKILLed (`mm`, then `mlserver`): the pod runner restarts it
(`kubectl get pods` shows RESTARTS 1 and READY back to 3/3), requests succeed again within a
bounded time and the InferenceService is READY True / Loaded again. `kubectl delete pod` gets
a replacement pod while traffic goes on. An InferenceService whose first load failed is deleted,
its model uploaded, and created again: it must load.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import (
    EXAMPLES,
    Cluster,
    etcd_values,
    isvc_ready,
    pod_row,
    runtime_pods,
    tutorial_request,
)

pytestmark = pytest.mark.timeout(240)

NAME = "example-sklearn-isvc"
RUNTIME = "mlserver-1.x"
REGISTRY = "modelmesh-serving/mm/modelmesh-serving/registry/"
RECOVERY_S = 45
"""How long requests may fail after a container dies (its restart takes a few seconds)."""


def answer(cluster: Cluster, name: str = NAME) -> str | None:
    """The predicted digit via the tutorial's grpcurl, or the error grpcurl printed."""
    proc = cluster.grpcurl_infer(tutorial_request(name))
    if proc.returncode != 0:
        return f"failed: {proc.stderr.strip()}"
    return str(json.loads(proc.stdout)["outputs"][0]["contents"]["int64Contents"][0])


def loaded(cluster: Cluster, name: str = NAME) -> bool:
    status = cluster.isvc(name).get("status", {})
    state = status.get("modelStatus", {}).get("states", {}).get("activeModelState")
    return isvc_ready(cluster, name) and state == "Loaded"


def table(cluster: Cluster) -> dict[str, list[str]]:
    """`kubectl get pods` as name -> [READY, STATUS, RESTARTS, ...]."""
    rows = [line.split() for line in cluster.kubectl("get", "pods").splitlines()[1:]]
    return {row[0]: row[1:] for row in rows}


def holder(cluster: Cluster) -> dict[str, Any]:
    """The runtime pod that holds a loaded copy of the tutorial's model (from etcd)."""
    copies: set[str] = set()
    for key, value in etcd_values(cluster, REGISTRY).items():
        if key.removeprefix(REGISTRY).startswith(f"{NAME}__isvc-"):
            copies |= set(json.loads(value).get("loadedIn") or {})
    pods = [p for p in runtime_pods(cluster, RUNTIME) if p["metadata"]["name"][-12:] in copies]
    assert pods, f"no runtime pod holds {NAME}: copies on {copies}"
    return pods[0]


def restarts(pod: dict[str, Any], container: str) -> int:
    statuses = pod["status"]["containerStatuses"]
    return int(next(s["restartCount"] for s in statuses if s["name"] == container))


def wait_recovered(cluster: Cluster, what: str) -> float:
    """Seconds until requests answer 8 again, then 5 answers in a row."""
    started = time.monotonic()
    cluster.wait(lambda: answer(cluster) == "8", RECOVERY_S, f"requests answering after {what}")
    took = time.monotonic() - started
    assert [answer(cluster) for _ in range(5)] == ["8"] * 5
    return took


@pytest.fixture(scope="module")
def served(local_cluster: Cluster) -> Iterator[Cluster]:
    cluster = local_cluster
    cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))
    cluster.wait(lambda: isvc_ready(cluster, NAME), 180, f"{NAME} READY")

    def two_pods() -> bool:
        pods = runtime_pods(cluster, RUNTIME)
        return len(pods) == 2 and all(pod_row(p)[:2] == ("Running", 3) for p in pods)

    cluster.wait(two_pods, 120, "2 runtime pods 3/3 Running")
    cluster.wait(lambda: answer(cluster) == "8", 60, "the first answer")
    cluster.wait(lambda: loaded(cluster), 60, f"{NAME} Loaded")
    yield cluster


@pytest.mark.parametrize("container", ["mm", "mlserver"])
def test_a_killed_container_is_restarted_and_traffic_recovers(
    served: Cluster, container: str
) -> None:
    cluster = served
    pod = holder(cluster)
    name = pod["metadata"]["name"]
    before = restarts(pod, container)
    pid = cluster.pod_pid(name, container)
    os.kill(pid, signal.SIGKILL)

    took = wait_recovered(cluster, f"SIGKILL of {container} in {name}")

    def restarted() -> bool:
        row = table(cluster)[name]
        pod_now = next(p for p in runtime_pods(cluster, RUNTIME) if p["metadata"]["name"] == name)
        total = sum(s["restartCount"] for s in pod_now["status"]["containerStatuses"])
        assert restarts(pod_now, container) == before + 1, pod_now["status"]
        return row[:3] == ["3/3", "Running", str(total)]

    cluster.wait(restarted, 60, f"{name} READY 3/3 with its {container} restarted once")
    assert cluster.pod_pid(name, container) != pid
    assert set(table(cluster)) >= {p["metadata"]["name"] for p in runtime_pods(cluster, RUNTIME)}
    assert len(runtime_pods(cluster, RUNTIME)) == 2
    cluster.wait(lambda: loaded(cluster), 60, f"{NAME} READY True and Loaded again")
    assert answer(cluster) == "8"
    assert took < RECOVERY_S


def test_an_inference_service_created_again_after_a_failed_load_loads(served: Cluster) -> None:
    cluster = served
    name, path = "late-model", "sklearn/late/mnist-svm.joblib"
    doc = (EXAMPLES / "tutorial-isvc.yaml").read_text()
    doc = doc.replace(f"name: {NAME}", f"name: {name}").replace("sklearn/mnist-svm.joblib", path)
    cluster.kubectl("apply", "-f", "-", stdin=doc)

    def failed() -> bool:
        states = cluster.isvc(name)["status"]["modelStatus"]["states"]
        return bool(states["activeModelState"] == "FailedToLoad")

    cluster.wait(failed, 60, f"{name} FailedToLoad with no request")  # loaded at creation
    proc = cluster.grpcurl_infer(tutorial_request(name))
    assert proc.returncode != 0 and "not found in bucket" in proc.stderr, proc.stderr
    cluster.kubectl("delete", "isvc", name)
    cluster.wait(
        lambda: not any(name in k for k in etcd_values(cluster, REGISTRY)), 30, "unregistered"
    )
    upload_sample(cluster, path)
    cluster.kubectl("apply", "-f", "-", stdin=doc)
    cluster.wait(lambda: isvc_ready(cluster, name), 60, f"{name} READY again")
    status = cluster.isvc(name)["status"]["modelStatus"]
    assert status["states"]["activeModelState"] != "FailedToLoad", status  # no failure on record
    errors = []
    for _ in range(3):  # it loads at the first request; a little slack for a busy machine
        proc = cluster.grpcurl_infer(tutorial_request(name))
        if proc.returncode == 0:
            break
        errors.append(proc.stderr.strip())
        time.sleep(2)
    assert proc.returncode == 0, f"{name} created again does not load: {errors}"
    assert json.loads(proc.stdout)["outputs"][0]["contents"]["int64Contents"] == ["8"]
    cluster.wait(lambda: loaded(cluster, name), 60, f"{name} Loaded")
    cluster.kubectl("delete", "isvc", name)


def upload_sample(cluster: Cluster, key: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=cluster.s3, region_name="us-east-1",
        aws_access_key_id="user", aws_secret_access_key="user",
    )  # fmt: skip
    bucket = "modelmesh-example-models"
    s3.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "sklearn/mnist-svm.joblib"}
    )


def test_a_deleted_pod_is_replaced_and_traffic_goes_on(served: Cluster) -> None:
    cluster = served
    pod = holder(cluster)
    name = pod["metadata"]["name"]
    pids = [cluster.pod_pid(name, c) for c in ("mm", "mlserver", "mlserver-adapter")]
    out = cluster.kubectl("delete", "pod", name)
    assert f'pod "{name}" deleted' in out
    answers = [answer(cluster)]

    def replaced() -> bool:
        answers.append(answer(cluster))
        names = {p["metadata"]["name"] for p in runtime_pods(cluster, RUNTIME)}
        return name not in names and len(names) == 2

    cluster.wait(replaced, 30, f"a pod replacing {name}")

    def running() -> bool:
        answers.append(answer(cluster))
        pods = runtime_pods(cluster, RUNTIME)
        return len(pods) == 2 and all(pod_row(p)[:2] == ("Running", 3) for p in pods)

    cluster.wait(running, 90, "2 runtime pods 3/3 Running after the delete")
    failed = [a for a in answers if a != "8"]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed during the delete"
    assert [answer(cluster) for _ in range(3)] == ["8"] * 3
    for pid in pids:  # the deleted pod's containers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    cluster.wait(lambda: loaded(cluster), 60, f"{NAME} READY True and Loaded")
