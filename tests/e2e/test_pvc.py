"""`storageUri: pvc://<claim>/<path>` on the local cluster, as a user does it: a
PersistentVolumeClaim (the local cluster backs it with a folder), the tutorial's model copied
into it, `allowAnyPVC: true`, and an InferenceService that reads the model in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cluster import Cluster, isvc_ready, tutorial_request

pytestmark = pytest.mark.timeout(420)

CLAIM = "models-pvc"
NAME = "example-pvc-isvc"

CLAIM_YAML = f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {CLAIM}
spec:
  accessModes: [ReadOnlyMany]
  resources:
    requests:
      storage: 1Gi
"""

ISVC_YAML = f"""apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {NAME}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: pvc://{CLAIM}/sklearn/mnist-svm.joblib
"""


def config_map(namespace: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-serving-config", "namespace": namespace},
        "data": {"config.yaml": yaml.safe_dump({"allowAnyPVC": True})},
    }
    return json.dumps(doc)


def test_a_model_on_a_pvc_answers(local_cluster: Cluster) -> None:
    cluster = local_cluster
    cluster.kubectl("apply", "-f", "-", stdin=config_map(cluster.namespace))
    cluster.kubectl("apply", "-f", "-", stdin=CLAIM_YAML)

    def bound() -> bool:
        claim = json.loads(cluster.kubectl("get", "pvc", CLAIM, "-o", "json"))
        return bool(claim.get("status", {}).get("phase") == "Bound")

    cluster.wait(bound, 60, f"PVC {CLAIM} Bound")
    claim = json.loads(cluster.kubectl("get", "pvc", CLAIM, "-o", "json"))
    folder = Path(claim["metadata"]["annotations"]["local.mmesh/path"])
    assert folder == cluster.workdir / "pvcs" / cluster.namespace / CLAIM
    (folder / "sklearn").mkdir(parents=True, exist_ok=True)
    shutil.copy(cluster.workdir / "samples" / "mnist-svm.joblib", folder / "sklearn")

    cluster.kubectl("apply", "-f", "-", stdin=ISVC_YAML)
    cluster.wait(lambda: isvc_ready(cluster, NAME), 300, f"{NAME} READY")

    answers: list[str] = []

    def answered() -> bool:
        proc = cluster.grpcurl_infer(tutorial_request(NAME))
        assert proc.returncode == 0, proc.stderr
        answers.extend(json.loads(proc.stdout)["outputs"][0]["contents"]["int64Contents"])
        return True

    cluster.wait(answered, 60, "grpcurl answering")
    assert answers == ["8"]

    # the runtime Deployment mounts the claim read-only where the adapter looks for it
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "modelmesh-serving-mlserver-1.x", "-o", "json")
    )
    spec = deployment["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": CLAIM, "readOnly": True}]
    adapter = next(c for c in spec["containers"] if c["name"] == "mlserver-adapter")
    assert {"name": "pvc-0", "mountPath": f"/pvc_mounts/{CLAIM}", "readOnly": True} in adapter[
        "volumeMounts"
    ]
    cluster.kubectl("delete", "isvc", NAME)
