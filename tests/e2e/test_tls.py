"""The tutorial over TLS on a local cluster run with `--client-auth require`: the operator mounts
the certificate Secret named in model-serving-config, routers serve TLS on 8033 and 8008 and
mutual TLS between pods; clients need the CA, and a client certificate."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import (
    EXAMPLES,
    GRPCURL,
    TUTORIAL_PROTO,
    Cluster,
    _missing,
    isvc_ready,
    start_cluster,
    tutorial_rest_body,
)

pytestmark = pytest.mark.timeout(300)

NAME = "example-sklearn-isvc"
INFER = "inference.GRPCInferenceService.ModelInfer"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    yield from start_cluster(tmp_path_factory.mktemp("tls-cluster"), "--client-auth", "require")


def tls(cluster: Cluster) -> Path:
    assert cluster.tls_dir is not None
    return cluster.tls_dir


def grpcurl(cluster: Cluster, *flags: str) -> subprocess.CompletedProcess[str]:
    body = (EXAMPLES / "tutorial-request.json").read_text()
    argv = [str(GRPCURL), "-max-time", "10", *flags, "-proto", TUTORIAL_PROTO, "-d", body]
    return cluster.run(*argv, cluster.grpc, INFER)


def with_client_cert(cluster: Cluster) -> list[str]:
    folder = tls(cluster)
    return ["-cacert", str(folder / "ca.crt"), "-cert", str(folder / "client.crt"),
            "-key", str(folder / "client.key")]  # fmt: skip


def test_ready_with_an_https_rest_url(tls_cluster: Cluster) -> None:
    tls_cluster.kubectl("apply", "-f", str(EXAMPLES / "tutorial-isvc.yaml"))
    tls_cluster.wait(lambda: isvc_ready(tls_cluster, NAME), 180, f"{NAME} READY")
    urls = tls_cluster.isvc(NAME)["status"]["components"]["predictor"]
    assert urls["restUrl"] == "https://modelmesh-serving.modelmesh-serving:8008"
    assert urls["grpcUrl"] == "grpc://modelmesh-serving.modelmesh-serving:8033"


def test_grpcurl_with_ca_and_client_certificate_answers_8_from_either_pod(
    tls_cluster: Cluster,
) -> None:
    # The port-forward alternates pods per connection, so half of these reach the pod
    # without the copy and are forwarded pod-to-pod over mutual TLS.
    for _ in range(6):
        proc = grpcurl(tls_cluster, *with_client_cert(tls_cluster))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["outputs"][0]["contents"]["int64Contents"] == ["8"]
    copies = tls_cluster.isvc(NAME)["status"]["modelStatus"]["copies"]
    assert copies == {"failedCopies": 0, "totalCopies": 1}  # so the other pod forwarded


def test_plaintext_and_missing_client_certificates_are_refused(tls_cluster: Cluster) -> None:
    plaintext = grpcurl(tls_cluster, "-plaintext")
    assert plaintext.returncode != 0 and "int64Contents" not in plaintext.stdout
    no_cert = grpcurl(tls_cluster, "-cacert", str(tls(tls_cluster) / "ca.crt"))
    assert no_cert.returncode != 0 and "int64Contents" not in no_cert.stdout
    unknown_ca = grpcurl(tls_cluster)  # the system CAs do not know the cluster's CA
    assert unknown_ca.returncode != 0


def test_curl_over_https(tls_cluster: Cluster) -> None:
    folder = tls(tls_cluster)
    url = f"https://{tls_cluster.rest}/v2/models/{NAME}/infer"
    body = tutorial_rest_body()
    ok = tls_cluster.run(
        "curl", "-s", "--cacert", str(folder / "ca.crt"), "--cert", str(folder / "client.crt"),
        "--key", str(folder / "client.key"), "-X", "POST", url, "-d", body,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"][0]["data"] == [8]
    no_cert = tls_cluster.run("curl", "-s", "--cacert", str(folder / "ca.crt"), url, "-d", body)
    assert no_cert.returncode != 0 and '"data"' not in no_cert.stdout
    plain = tls_cluster.run("curl", "-s", f"http://{tls_cluster.rest}/v2/models/{NAME}/infer",
                            "-d", body)  # fmt: skip
    assert '"data": [8]' not in plain.stdout
