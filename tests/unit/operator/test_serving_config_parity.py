"""model-serving-config keys of the data-plane parity work: payloadProcessors (one URI per
entry, as the reference checks) and metrics.perModelMetrics."""

from __future__ import annotations

import pytest

from mmesh.operator.errors import InvalidConfig
from mmesh.operator.serving_config import merge_config
from mmesh.router.settings import RouterSettings
from tests.unit.operator.conftest import DEFAULTS_YAML
from tests.unit.operator.test_deployment import containers, env_of, render, with_config


def test_payload_processors_are_one_uri_each() -> None:
    config = merge_config(
        DEFAULTS_YAML, "payloadProcessors: ['http://sink:8080/p?iris#ModelInfer', 'logger://*']"
    )
    assert config.payload_processors == ("http://sink:8080/p?iris#ModelInfer", "logger://*")
    with pytest.raises(InvalidConfig, match="one URI without whitespace"):
        merge_config(DEFAULTS_YAML, "payloadProcessors: ['example:8080/consumer/kse rve/v2']")


def test_per_model_metrics_defaults_off() -> None:
    assert merge_config(DEFAULTS_YAML, None).metrics.per_model_metrics is False
    on = merge_config(DEFAULTS_YAML, "metrics: {perModelMetrics: true}")
    assert on.metrics.per_model_metrics is True


def test_the_router_gets_both() -> None:
    config = with_config(
        "metrics: {perModelMetrics: true}\n"
        "inferenceTimeoutMillis: 30000\n"
        "payloadProcessors: ['http://sink:8080/p?iris', 'logger://*#ModelInfer']"
    )
    env = env_of(containers(render(config=config))["mm"])
    assert env["MM_METRICS"] == "prometheus:port=2112;scheme=http;per_model_metrics=true"
    assert env["MM_PAYLOAD_PROCESSORS"] == "http://sink:8080/p?iris logger://*#ModelInfer"
    settings = RouterSettings.model_validate(
        {"KV_STORE": "etcd:127.0.0.1:2379", **env_strings(env)}
    )
    assert settings.metrics_config.per_model
    assert settings.inference_timeout_ms == 30000
    assert "MM_INFERENCE_TIMEOUT_MS" not in env_of(containers(render())["mm"])  # default: none


def env_strings(env: dict[str, object]) -> dict[str, str]:
    return {k: v for k, v in env.items() if isinstance(v, str)}
