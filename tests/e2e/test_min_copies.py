"""Minimum copies on an InferenceService, seen by a user on the local cluster.

Two pods of the small MLServer runtime hold 2 copies of the MNIST model each (4 in all, the
sizing of test_mesh.py). One InferenceService asks for 2 copies with the
`serving.kserve.io/minimumCopies` annotation; 6 others are then used in turn, more than the
2 slots left can hold, so the pods keep evicting. The annotated model keeps both copies
through the whole burst although it is the least recently used, every answer is the digit 8,
and `kubectl get isvc` shows the minimum next to the copies.
"""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import pytest

from tests.e2e.test_mesh import (
    INFER,
    RUNTIME,
    SIZE_MULTIPLIER,
    Sizing,
    apply,
    churn_guard_off,
    deployment_env,
    isvc_manifest,
    loaded_in_etcd,
    model_path,
    ready,
    small_runtime,
    upload_copies,
)
from tests.fixtures.cluster import Cluster, answered_digit, inference_request

pytestmark = pytest.mark.timeout(480)

PINNED = "pinned"
OTHERS = [f"burst-{i}" for i in range(6)]
MIN_COPIES = "serving.kserve.io/minimumCopies"


def copies_status(cluster: Cluster, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "isvc", name, "-o", "jsonpath={.status.modelStatus.copies}")
    return dict(json.loads(out or "{}"))


def infer(channel: grpc.Channel, name: str) -> int:
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    answer = call(inference_request(name), timeout=60)
    assert isinstance(answer, bytes)
    return answered_digit(answer)[1]


def test_an_annotated_isvc_keeps_two_copies_through_a_burst_of_other_models(
    local_cluster: Cluster,
) -> None:
    cluster = local_cluster
    names = [PINNED, *OTHERS]
    disk_bytes = upload_copies(cluster, [model_path(n) for n in names])
    sizing = Sizing.for_model(math.ceil(disk_bytes * SIZE_MULTIPLIER))
    apply(cluster, churn_guard_off(cluster))
    apply(cluster, small_runtime(cluster.namespace, sizing))
    cluster.wait(
        lambda: deployment_env(cluster, RUNTIME, "mm").get("MM_MIN_CHURN_AGE_MS") == "0",
        90,
        f"the {RUNTIME} Deployment without the churn guard",
    )
    pinned = isvc_manifest(PINNED, model_path(PINNED))
    pinned["metadata"]["annotations"][MIN_COPIES] = "2"
    apply(cluster, pinned, *(isvc_manifest(n, model_path(n)) for n in OTHERS))

    cluster.wait(
        lambda: all(ready(cluster.isvc(n)) for n in names), 240, "7 InferenceServices READY"
    )
    cluster.wait(lambda: loaded_in_etcd(cluster).get(PINNED) == 2, 120, "2 loaded copies of pinned")
    cluster.wait(
        lambda: copies_status(cluster, PINNED) == {
            "failedCopies": 0, "totalCopies": 2, "minCopies": 2
        },
        60,
        "the status showing 2 of 2 minimum copies",
    )  # fmt: skip
    assert "minCopies" not in copies_status(cluster, OTHERS[0])

    channel = grpc.insecure_channel(cluster.grpc)
    try:
        seen_loaded: set[str] = set()
        for _ in range(2):  # 12 loads through the 2 free slots: every pod evicts
            for name in OTHERS:
                assert infer(channel, name) == 8
                loaded = loaded_in_etcd(cluster)
                assert loaded.get(PINNED) == 2, loaded
                seen_loaded.update(n for n in OTHERS if loaded.get(n))
        assert seen_loaded == set(OTHERS)
        assert infer(channel, PINNED) == 8
    finally:
        channel.close()
    cluster.wait(
        lambda: sum(loaded_in_etcd(cluster).get(n, 0) for n in OTHERS) <= 2,
        30,
        "the burst models sharing the 2 slots pinned leaves",
    )
    status = cluster.isvc(PINNED)["status"]
    assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"
    assert status["modelStatus"]["copies"]["minCopies"] == 2
