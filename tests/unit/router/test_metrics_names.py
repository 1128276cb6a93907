"""The reference Grafana dashboard (modelmesh-serving config/dashboard) queries these series;
each must exist in the router's exposition under the same name and label."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mmesh.router.metrics import RouterMetrics
from mmesh.router.metricsconfig import MetricsConfig

# (series, label filter) as the dashboard's expressions use them.
DASHBOARD = [
    ("modelmesh_api_request_milliseconds_sum", {"code": "OK"}),
    ("modelmesh_api_request_milliseconds_count", {"code": "OK"}),
    ("modelmesh_invoke_model_milliseconds_sum", {"code": "OK"}),
    ("modelmesh_invoke_model_milliseconds_count", {}),
    ("modelmesh_req_queue_delay_milliseconds_sum", {}),
    ("modelmesh_req_queue_delay_milliseconds_count", {}),
    ("modelmesh_request_size_bytes_sum", {}),
    ("modelmesh_response_size_bytes_count", {}),
    ("modelmesh_cache_miss_milliseconds_count", {}),
    ("modelmesh_loadmodel_milliseconds_sum", {}),
    ("modelmesh_loadmodel_milliseconds_count", {}),
    ("modelmesh_loadmodel_failure", {}),
    ("modelmesh_unloadmodel_milliseconds_count", {}),
    ("modelmesh_model_sizing_milliseconds_sum", {}),
    ("modelmesh_age_at_eviction_milliseconds_count", {}),
    ("modelmesh_loaded_model_size_bytes_sum", {}),
    ("modelmesh_instance_used_bytes", {}),
    ("modelmesh_instance_capacity_bytes", {}),
    ("modelmesh_instance_models_total", {}),
    ("modelmesh_instance_lru_age_seconds", {}),
    ("modelmesh_models_loaded_total", {}),
    ("modelmesh_models_managed_total", {}),
    ("modelmesh_models_with_failure_total", {}),
]

INFER = "/inference.GRPCInferenceService/ModelInfer"


def exposed(metrics: RouterMetrics) -> list[tuple[str, dict[str, str]]]:
    text = generate_latest(metrics.registry).decode()
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_every_dashboard_series_is_exposed() -> None:
    metrics = RouterMetrics()
    metrics.observe_request(INFER, "OK", 3.0, request_bytes=10, response_bytes=20)
    metrics.observe_invoke(INFER, "OK", 2.0)
    metrics.observe_queue_delay(1.0)
    metrics.load_failures.inc()
    samples = exposed(metrics)
    missing = [
        (name, want)
        for name, want in DASHBOARD
        if not any(n == name and want.items() <= labels.items() for n, labels in samples)
    ]
    assert missing == []
    assert ("modelmesh_loadmodel_failure", {}) in samples
    assert ("modelmesh_api_request_milliseconds_count", {"method": "ModelInfer", "code": "OK"}) in (
        samples
    )


def test_model_labels_only_with_per_model_metrics() -> None:
    plain = RouterMetrics()
    plain.observe_request(INFER, "OK", 1.0, request_bytes=1, response_bytes=1, model_id="m")
    assert not any("modelId" in labels for _, labels in exposed(plain))
    per_model = RouterMetrics(MetricsConfig(per_model=True, fq_names=True))
    per_model.observe_request(
        INFER, "NOT_FOUND", 1.0, request_bytes=1, response_bytes=None, model_id="m", vmodel_id="v"
    )
    per_model.observe_invoke(INFER, "OK", 1.0, model_id="m", vmodel_id="v")
    labels = {
        "method": "inference.GRPCInferenceService/ModelInfer",
        "code": "NOT_FOUND",
        "modelId": "m",
        "vModelId": "v",
    }
    samples = exposed(per_model)
    assert ("modelmesh_api_request_milliseconds_count", labels) in samples
    assert ("modelmesh_request_size_bytes_count", labels) in samples
    assert not any(n == "modelmesh_response_size_bytes_count" for n, _ in samples)
    assert ("modelmesh_invoke_model_milliseconds_count", {**labels, "code": "OK"}) in samples
