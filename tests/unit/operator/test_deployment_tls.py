"""`tls.secretName` / `tls.clientAuth` in model-serving-config -> the mm container's TLS
env and the secret mount, read back by the router's own settings."""

from __future__ import annotations

import pytest

from mmesh.operator.pod_parts import NamespaceFacts
from mmesh.router.settings import RouterSettings
from mmesh.router.tls import ClientAuth
from tests.unit.operator.conftest import NAMESPACE
from tests.unit.operator.test_deployment import (
    containers,
    env_of,
    mounts,
    render,
    resolved_env,
    volumes,
    with_config,
)

TLS_DIR = "/opt/kserve/mmesh/tls"


def mm_env(user: str, facts: NamespaceFacts | None = None) -> dict[str, str]:
    deployment = render(config=with_config(user), facts=facts or NamespaceFacts(NAMESPACE))
    return resolved_env(containers(deployment)["mm"], deployment)


def test_default_config_has_no_tls() -> None:
    deployment = render()
    mm = containers(deployment)["mm"]
    assert not [name for name in env_of(mm) if name.startswith("MM_TLS_")]
    assert "tls-certs" not in mounts(mm)
    assert "tls-certs" not in volumes(deployment)
    assert RouterSettings.model_validate(resolved_env(mm, deployment)).tls_policy() is None


def test_secret_is_mounted_into_mm_only() -> None:
    deployment = render(config=with_config("tls: {secretName: mm-tls}"))
    assert volumes(deployment)["tls-certs"]["secret"] == {
        "secretName": "mm-tls",
        "defaultMode": 420,
    }
    by_container = {name: mounts(c) for name, c in containers(deployment).items()}
    assert by_container.pop("mm")["tls-certs"] == TLS_DIR
    assert all("tls-certs" not in m for m in by_container.values())
    mm = containers(deployment)["mm"]
    assert {"name": "tls-certs", "mountPath": TLS_DIR, "readOnly": True} in mm["volumeMounts"]


def test_tls_without_client_auth() -> None:
    env = mm_env("tls: {secretName: mm-tls}")
    assert env["MM_TLS_KEY_CERT_PATH"] == f"{TLS_DIR}/tls.crt"
    assert env["MM_TLS_PRIVATE_KEY_PATH"] == f"{TLS_DIR}/tls.key"
    assert "MM_TLS_CLIENT_AUTH" not in env
    # peers are verified against the secret's certificate and CA even without client auth
    assert env["MM_TLS_TRUST_CERT_PATH"] == f"{TLS_DIR}/tls.crt,{TLS_DIR}/ca.crt"
    policy = RouterSettings.model_validate(env).tls_policy()
    assert policy is not None
    assert policy.client_auth is ClientAuth.NONE
    assert policy.verify_paths == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/ca.crt")


@pytest.mark.parametrize(
    ("client_auth", "env_value", "mode"),
    [
        ("require", "REQUIRE", ClientAuth.REQUIRE),
        ("optional", "OPTIONAL", ClientAuth.OPTIONAL),
        ("Require", "REQUIRE", ClientAuth.REQUIRE),
    ],
)
def test_client_auth_reaches_the_router(client_auth: str, env_value: str, mode: ClientAuth) -> None:
    env = mm_env(f"tls: {{secretName: mm-tls, clientAuth: {client_auth}}}")
    assert env["MM_TLS_CLIENT_AUTH"] == env_value
    policy = RouterSettings.model_validate(env).tls_policy()
    assert policy is not None
    assert policy.client_auth is mode


def test_secret_known_to_lack_a_ca() -> None:
    env = mm_env("tls: {secretName: mm-tls}", NamespaceFacts(NAMESPACE, tls_has_ca=False))
    assert env["MM_TLS_TRUST_CERT_PATH"] == f"{TLS_DIR}/tls.crt"


def test_client_auth_without_a_secret_leaves_tls_off() -> None:
    env = mm_env("tls: {clientAuth: require}")
    assert not [name for name in env if name.startswith("MM_TLS_")]
