"""model-serving-config: shipped defaults, case-insensitive merge, clear rejections."""

from __future__ import annotations

import pytest

from mmesh.operator.errors import InvalidConfig
from mmesh.operator.serving_config import ImageConfig, ServingConfig, merge_config
from tests.unit.operator.conftest import DEFAULTS_YAML


def merged(user: str | None) -> ServingConfig:
    return merge_config(DEFAULTS_YAML, user)


def test_reference_defaults() -> None:
    config = merged(None)
    assert config.inference_service_name == "modelmesh-serving"
    assert config.inference_service_port == 8033
    assert config.storage_secret_name == "storage-config"
    assert config.pods_per_runtime == 2
    assert config.headless_service is True
    assert config.scale_to_zero.enabled is True
    assert config.scale_to_zero.grace_period_seconds == 60
    assert config.metrics.enabled is True
    assert config.metrics.port == 2112
    assert config.rest_proxy.enabled is True
    assert config.rest_proxy.port == 8008
    assert config.grpc_max_message_size_bytes == 16_777_216
    assert config.built_in_server_types == ("triton", "mlserver", "ovms", "torchserve")
    assert config.tls.enabled is False
    assert config.service_account_name == ""
    assert config.model_mesh_image.command == ("python", "-m", "mmesh.router")
    assert config.storage_helper_image.command == ("python", "-m", "mmesh.adapter")
    assert dict(config.model_mesh_resources.requests) == {"cpu": "300m", "memory": "448Mi"}


def test_shipped_defaults_equal_the_code_defaults_where_both_exist() -> None:
    shipped, code = merged(None), ServingConfig()
    for name in ("inference_service_name", "pods_per_runtime", "scale_to_zero", "tls"):
        assert getattr(shipped, name) == getattr(code, name)


@pytest.mark.parametrize("user", [None, "", "# only a comment\n", "{}"])
def test_empty_user_config_means_defaults(user: str | None) -> None:
    assert merged(user) == merged(None)


def test_user_values_override_and_sections_merge() -> None:
    config = merged("podsPerRuntime: 1\nscaleToZero:\n  gracePeriodSeconds: 5\n")
    assert config.pods_per_runtime == 1
    assert config.scale_to_zero.grace_period_seconds == 5
    assert config.scale_to_zero.enabled is True  # sibling default kept


def test_keys_are_case_insensitive_but_map_keys_are_kept() -> None:
    config = merged(
        "PODSPERRUNTIME: 4\n"
        "scaletozero: {ENABLED: false}\n"
        "allowanypvc: true\n"
        "runtimePodLabels: {Team: Blue}\n"
        "imagepullsecrets: [{NAME: regcred}]\n"
    )
    assert config.pods_per_runtime == 4
    assert config.scale_to_zero.enabled is False
    assert config.allow_any_pvc is True
    assert config.runtime_pod_labels == {"Team": "Blue"}
    assert [s.name for s in config.image_pull_secrets] == ["regcred"]


def test_lists_replace_defaults() -> None:
    assert merged("builtInServerTypes: [mlserver]").built_in_server_types == ("mlserver",)


def test_numeric_quantities_become_strings() -> None:
    config = merged("modelMeshResources: {limits: {cpu: 2, memory: 1Gi}}")
    assert dict(config.model_mesh_resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert dict(config.model_mesh_resources.requests) == {"cpu": "300m", "memory": "448Mi"}


def test_tls_settings() -> None:
    config = merged("tls: {secretName: mm-tls, clientAuth: require}")
    assert config.tls.enabled
    assert config.tls.client_auth == "require"


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("podsPerRuntim: 3", "podsPerRuntim: Extra inputs are not permitted"),
        ("podsPerRuntime: many", "podsPerRuntime: Input should be a valid integer"),
        ("podsPerRuntime: -1", "podsPerRuntime: Input should be greater than or equal to 0"),
        ("metrics: {port: 70000}", "metrics.port"),
        ("tls: {clientAuth: sometimes}", "tls.clientAuth"),
        ("scaleToZero: {enabled: true, graceSeconds: 5}", "scaleToZero.graceSeconds"),
        ("restProxy: yes", "restProxy"),
        ("- a\n- b", "must be a YAML mapping, got list"),
        ("podsPerRuntime: [", "not valid YAML"),
    ],
)
def test_bad_user_config_is_rejected_with_a_clear_message(user: str, problem: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        merged(user)
    assert problem in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidConfig) as caught:
        merged("podsPerRuntim: 3\nheadlessService: maybe")
    assert "podsPerRuntim" in caught.value.message
    assert "headlessService" in caught.value.message


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        (ImageConfig(name="repo/img"), "repo/img"),
        (ImageConfig(name="repo/img", tag="1.0"), "repo/img:1.0"),
        (ImageConfig(name="repo/img", tag="1.0", digest="sha256:ab"), "repo/img@sha256:ab"),
    ],
)
def test_image_reference(image: ImageConfig, reference: str) -> None:
    assert image.reference == reference
