"""The seed tutorial (seeds/003), step for step, on the local cluster: kubectl, grpcurl, curl.

The tests share one cluster and run in file order, as the tutorial's steps do.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request

import pytest

from tests.fixtures.cluster import (
    EXAMPLES,
    Cluster,
    isvc_ready,
    tutorial_request,
    tutorial_rest_body,
)

pytestmark = pytest.mark.timeout(300)

NAME = "example-sklearn-isvc"
GRPC_URL = "grpc://modelmesh-serving.modelmesh-serving:8033"
REST_URL = "http://modelmesh-serving.modelmesh-serving:8008"
CONCRETE = re.compile(rf"^{NAME}__isvc-[0-9a-f]{{10}}$")


def infer_grpc(cluster: Cluster) -> dict[str, object]:
    proc = cluster.grpcurl_infer(tutorial_request(NAME))
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_default_serving_runtimes_are_listed(local_cluster: Cluster) -> None:
    table = local_cluster.kubectl("get", "servingruntimes")
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["NAME", "DISABLED", "MODELTYPE", "CONTAINERS"]
    names = {row.split()[0]: row for row in rows}
    assert set(names) == {"mlserver-1.x", "ovms-1.x", "torchserve-0.x", "triton-2.x"}
    assert "sklearn" in names["mlserver-1.x"] and "mlserver" in names["mlserver-1.x"]


def test_apply_becomes_ready_with_the_grpc_url(local_cluster: Cluster) -> None:
    out = local_cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))
    assert out.strip() == f"inferenceservice.serving.kserve.io/{NAME} created"

    local_cluster.wait(lambda: isvc_ready(local_cluster, NAME), 180, f"{NAME} READY")

    row = local_cluster.kubectl("get", "isvc").splitlines()[1].split()
    assert row[:3] == [NAME, GRPC_URL, "True"]

    def runtime_pods_running() -> bool:
        pods = [p.split() for p in local_cluster.kubectl("get", "pods").splitlines()[1:]]
        mine = [p for p in pods if p[0].startswith("modelmesh-serving-mlserver-1.x-")]
        return len(mine) == 2 and all(p[1:3] == ["3/3", "Running"] for p in mine)

    local_cluster.wait(runtime_pods_running, 60, "2 runtime pods 3/3 Running")


def test_grpcurl_answers_the_digit(local_cluster: Cluster) -> None:
    answer = infer_grpc(local_cluster)
    assert CONCRETE.match(str(answer["modelName"])), answer
    outputs = answer["outputs"]
    assert isinstance(outputs, list)
    assert outputs[0]["name"] == "predict"
    assert outputs[0]["datatype"] == "INT64"
    assert outputs[0]["contents"]["int64Contents"] == ["8"]


def test_curl_answers_the_digit(local_cluster: Cluster) -> None:
    proc = local_cluster.curl_infer(NAME, tutorial_rest_body())
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert CONCRETE.match(answer["model_name"]), answer
    assert answer["outputs"][0]["data"] == [8]


def test_describe_shows_urls_and_loaded_status(local_cluster: Cluster) -> None:
    local_cluster.wait(
        lambda: "Active Model State:  Loaded" in local_cluster.kubectl("describe", "isvc", NAME),
        60,
        "Loaded in describe",
    )
    text = local_cluster.kubectl("describe", "isvc", NAME)
    for line in (
        f"Grpc URL:  {GRPC_URL}",
        f"Rest URL:  {REST_URL}",
        "Type:                  PredictorReady",
        "Transition Status:     UpToDate",
        "Failed Copies:  0",
    ):
        assert line in text, text


def test_storage_uri_form_rolls_to_a_new_model(local_cluster: Cluster) -> None:
    before = infer_grpc(local_cluster)["modelName"]
    out = local_cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc-storageuri.yaml"))
    assert out.strip() == f"inferenceservice.serving.kserve.io/{NAME} configured"

    def switched() -> bool:
        answer = infer_grpc(local_cluster)
        assert answer["outputs"][0]["contents"]["int64Contents"] == ["8"]  # type: ignore[index]
        return answer["modelName"] != before

    local_cluster.wait(switched, 120, "the storageUri model answering")
    local_cluster.wait(
        lambda: local_cluster.isvc(NAME)["status"]["modelStatus"]["transitionStatus"] == "UpToDate",
        60,
        "UpToDate",
    )
    assert local_cluster.isvc(NAME)["status"]["url"] == GRPC_URL


def test_a_bad_inference_service_is_reported_and_serving_goes_on(local_cluster: Cluster) -> None:
    bad = (EXAMPLES / "tutorial-isvc.yaml").read_text()
    bad = bad.replace(f"name: {NAME}", "name: no-such-format").replace("sklearn", "no-such")
    local_cluster.kubectl("apply", "-f", "-", stdin=bad)

    def reported() -> bool:
        conditions = local_cluster.isvc("no-such-format").get("status", {}).get("conditions", [])
        return any(c.get("reason") == "NoSupportingRuntime" for c in conditions)

    local_cluster.wait(reported, 60, "NoSupportingRuntime on the bad InferenceService")
    row = local_cluster.kubectl("get", "isvc", "no-such-format").splitlines()[1].split()
    assert "False" in row
    assert infer_grpc(local_cluster)["outputs"][0]["contents"]["int64Contents"] == ["8"]  # type: ignore[index]
    local_cluster.kubectl("delete", "isvc", "no-such-format")


def test_no_storage_secret_in_logs_events_status_or_metrics(local_cluster: Cluster) -> None:
    secret = json.loads(local_cluster.kubectl("get", "secret", "storage-config", "-o", "json"))
    entry = json.loads(base64.b64decode(secret["data"]["localMinIO"]))
    value = entry["secret_access_key"]
    assert len(value) > 16  # a distinctive value, so finding none means something

    logs = [
        *local_cluster.workdir.glob("logs/*.log"),
        *local_cluster.workdir.glob("pods/*/logs/*.log"),
    ]
    assert any("mm.log" in str(p) for p in logs) and any("operator" in str(p) for p in logs)
    leaked = [str(p) for p in logs if value in p.read_text(errors="replace")]
    assert not leaked, f"the storage secret is in {leaked}"
    for kind in ("events", "isvc", "pods", "deployments"):
        assert value not in local_cluster.kubectl("get", kind, "-o", "json"), kind
    pods = json.loads(local_cluster.kubectl("get", "pods", "-o", "json"))["items"]
    for pod in pods:
        url = f"http://{pod['status']['podIP']}:2112/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
        assert "modelmesh_" in metrics and value not in metrics


def test_delete_unregisters_the_model(local_cluster: Cluster) -> None:
    assert any(NAME in key for key in local_cluster.etcd_keys())
    out = local_cluster.kubectl("delete", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))
    assert f'inferenceservice.serving.kserve.io "{NAME}" deleted' in out

    def gone() -> bool:
        proc = local_cluster.grpcurl_infer(tutorial_request(NAME))
        return proc.returncode != 0 and "Code: NotFound" in proc.stderr

    local_cluster.wait(gone, 60, "grpcurl NOT_FOUND after delete")
    local_cluster.wait(
        lambda: not any(NAME in key for key in local_cluster.etcd_keys()),
        30,
        "registrations removed from etcd",
    )
    assert "No resources found" in local_cluster.kubectl("get", "isvc", check=False) + (
        local_cluster.run("kubectl", "get", "isvc").stderr
    )
