"""MM_METRICS as the reference writes it."""

from __future__ import annotations

import pytest

from mmesh.router.metricsconfig import BadMetricsConfig, MetricsConfig, parse_metrics


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("disabled", MetricsConfig(enabled=False)),
        ("", MetricsConfig(enabled=False)),
        ("prometheus:", MetricsConfig()),
        ("prometheus:port=2112;scheme=https", MetricsConfig(https=True)),
        (
            "prometheus:port=9000;scheme=http;fq_names=true;per_model_metrics=true",
            MetricsConfig(port=9000, fq_names=True, per_model=True),
        ),
        ("prometheus:per_model_metrics=TRUE;mem_detail=all", MetricsConfig(per_model=True)),
    ],
)
def test_parses(raw: str, expected: MetricsConfig) -> None:
    assert parse_metrics(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("statsd:port=8126", "'statsd' is not supported"),
        ("prometheus:port=abc", "port must be 1-65535, got 'abc'"),
        ("prometheus:port=²", "port must be 1-65535, got '²'"),
        ("prometheus:port=70000", "port must be 1-65535"),
        ("prometheus:scheme=ftp", "scheme must be http or https, got 'ftp'"),
        ("prometheus:per_model_metrics=yes", "per_model_metrics must be true or false"),
    ],
)
def test_bad_values_name_themselves(raw: str, message: str) -> None:
    with pytest.raises(BadMetricsConfig, match=message):
        parse_metrics(raw)


def test_method_labels_are_short_unless_fq_names() -> None:
    method = "/inference.GRPCInferenceService/ModelInfer"
    assert MetricsConfig().method_label(method) == "ModelInfer"
    assert MetricsConfig(fq_names=True).method_label(method) == (
        "inference.GRPCInferenceService/ModelInfer"
    )
