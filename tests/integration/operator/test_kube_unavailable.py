"""A status patch the Kubernetes API does not take is a KubeUnavailable naming the object
(the status reporter retries it in a second instead of dying for kopf's 60 s back-off)."""

from __future__ import annotations

import pytest
from kubernetes import client

from mmesh.operator.errors import KubeUnavailable
from mmesh.operator.kube import Kube
from tests.fixtures.procs import free_port


def test_an_unreachable_api_is_kube_unavailable() -> None:
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config.retries = 0
    kube = Kube(client.ApiClient(config))
    with pytest.raises(KubeUnavailable) as caught:
        kube.patch_isvc_status("ns", "example-sklearn-isvc", {"modelStatus": {}})
    assert "status of ns/example-sklearn-isvc" in caught.value.message
    assert "did not answer" in caught.value.message
