"""The zone a Node carries, and where the router asks for it."""

from __future__ import annotations

from mmesh.router.nodezone import api_base, zone_of


def test_zone_label_and_its_beta_fallback() -> None:
    node = {"metadata": {"labels": {"topology.kubernetes.io/zone": "eu-1a"}}}
    assert zone_of(node) == "eu-1a"
    old = {"metadata": {"labels": {"failure-domain.beta.kubernetes.io/zone": "us-2b"}}}
    assert zone_of(old) == "us-2b"
    assert zone_of({"metadata": {"labels": {}}}) == ""
    assert zone_of({}) == ""


def test_api_base() -> None:
    assert api_base(explicit_url="http://127.0.0.1:9/", service_host="x", service_port="1") == (
        "http://127.0.0.1:9"
    )
    assert api_base(explicit_url="", service_host="10.96.0.1", service_port="443") == (
        "https://10.96.0.1:443"
    )
    assert api_base(explicit_url="", service_host="fd00::1", service_port="") == (
        "https://[fd00::1]:443"
    )
    assert api_base(explicit_url="", service_host="", service_port="") == ""
