"""Prometheus collectors with the reference's metric names, all in one place.

Request metrics carry `method` (short name unless MM_METRICS has fq_names=true) and `code`,
plus `modelId` and `vModelId` with per_model_metrics=true (off by default: one series per
model). The reference's counters are exposed under its own names too (no `_total`), so the
reference Grafana dashboard's queries answer unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from mmesh.router.loophist import LoopHistogram, LoopHistogramChild
from mmesh.router.metricsconfig import MetricsConfig

MS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 120000)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


MODEL_LABELS = ("modelId", "vModelId")


class RouterMetrics:
    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.registry = CollectorRegistry()
        r = self.registry
        per_model = MODEL_LABELS if self.config.per_model else ()
        self._request_children: dict[tuple[str, ...], list[LoopHistogramChild]] = {}
        self._invoke_children: dict[tuple[str, ...], LoopHistogramChild] = {}
        self.api_request_ms = LoopHistogram(
            "modelmesh_api_request_milliseconds",
            "External request time",
            ["method", "code", *per_model],
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.invoke_model_ms = LoopHistogram(
            "modelmesh_invoke_model_milliseconds",
            "Runtime call time",
            ["method", "code", *per_model],
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.request_size = LoopHistogram(
            "modelmesh_request_size_bytes",
            "Request payload size",
            ["method", "code", *per_model],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.response_size = LoopHistogram(
            "modelmesh_response_size_bytes",
            "Response payload size",
            ["method", "code", *per_model],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.req_queue_delay_ms = LoopHistogram(
            "modelmesh_req_queue_delay_milliseconds",
            "Time a request waited on this router before its model server call started",
            list(per_model),
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.payloads_dropped = Counter(
            "modelmesh_payload_processor_dropped",
            "Payloads not handed to a payload processor because its queue was full",
            registry=r,
        )
        self.payloads_failed = Counter(
            "modelmesh_payload_processor_failed",
            "Payloads a payload processor sink refused or did not take",
            registry=r,
        )
        self.cache_miss_ms = Histogram(
            "modelmesh_cache_miss_milliseconds",
            "Delay caused by a cache miss",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.load_ms = Histogram(
            "modelmesh_loadmodel_milliseconds", "Model load time", buckets=MS_BUCKETS, registry=r
        )
        self.load_failures = Counter(
            "modelmesh_loadmodel_failure", "Failed model loads", registry=r
        )
        self.unload_ms = Histogram(
            "modelmesh_unloadmodel_milliseconds",
            "Model unload time",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.unload_failures = Counter(
            "modelmesh_unloadmodel_failure", "Unloads that failed for good", registry=r
        )
        self.unload_attempt_failures = Counter(
            "modelmesh_unloadmodel_attempt_failure", "Unload attempts that failed", registry=r
        )
        self.loading_queue_ms = Histogram(
            "modelmesh_loading_queue_delay_milliseconds",
            "Time in the loading queue",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.sizing_ms = Histogram(
            "modelmesh_model_sizing_milliseconds",
            "Model sizing time",
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.age_at_eviction_ms = Histogram(
            "modelmesh_age_at_eviction_milliseconds",
            "Time since last use at eviction",
            buckets=(*MS_BUCKETS, 600000, 3600000, 86400000),
            registry=r,
        )
        self.evictions = Counter(
            "modelmesh_model_evicted", "Models evicted from this instance's cache", registry=r
        )
        self.loaded_size = Histogram(
            "modelmesh_loaded_model_size_bytes",
            "Sizes of loaded models",
            buckets=(*SIZE_BUCKETS, 67108864, 268435456, 1073741824),
            registry=r,
        )
        self.instance_lru_s = Gauge(
            "modelmesh_instance_lru_seconds",
            "Last use of this instance's LRU model (epoch s)",
            registry=r,
        )
        self.instance_lru_age_s = Gauge(
            "modelmesh_instance_lru_age_seconds", "Age of this instance's LRU model", registry=r
        )
        self.capacity_bytes = Gauge(
            "modelmesh_instance_capacity_bytes", "Cache capacity", registry=r
        )
        self.used_bytes = Gauge("modelmesh_instance_used_bytes", "Cache space in use", registry=r)
        self.used_bps = Gauge(
            "modelmesh_instance_used_bps", "Cache space in use, basis points", registry=r
        )
        self.cluster_models_loaded = Gauge(
            "modelmesh_models_loaded_total", "Models with a loaded copy (leader only)", registry=r
        )
        self.cluster_models_failed = Gauge(
            "modelmesh_models_with_failure_total",
            "Models with a recent load failure (leader only)",
            registry=r,
        )
        self.cluster_models_managed = Gauge(
            "modelmesh_models_managed_total", "Registered models (leader only)", registry=r
        )
        self.models_total = Gauge(
            "modelmesh_instance_models_total", "Models in this instance's cache", registry=r
        )
        self.registry_repairs = Counter(
            "modelmesh_registry_repairs",
            "Registry entries this router repaired, by kind (stale_claim, peer_stale_claim, "
            "startup_claim, missing_claim, loaded_state, expired_failure, runtime_lost)",
            ["kind"],
            registry=r,
        )

        r.register(_ReferenceCounterNames(self))

    def _key(self, method: str, code: str, model_id: str, vmodel_id: str) -> tuple[str, ...]:
        """The cache key of a labelled child (`labels()` costs more than the observation)."""
        return (method, code, model_id, vmodel_id) if self.config.per_model else (method, code)

    def _model(self, model_id: str, vmodel_id: str) -> tuple[str, ...]:
        return (model_id, vmodel_id) if self.config.per_model else ()

    def observe_request(
        self,
        method: str,
        code: str,
        elapsed_ms: float,
        *,
        request_bytes: int,
        response_bytes: int | None,
        model_id: str = "",
        vmodel_id: str = "",
    ) -> None:
        """One external request, as the reference's logRequestMetrics(external=true)."""
        key = self._key(method, code, model_id, vmodel_id)
        children = self._request_children.get(key)
        if children is None:
            labels = (self.config.method_label(method), code, *self._model(model_id, vmodel_id))
            children = [self.api_request_ms.labels(*labels), self.request_size.labels(*labels)]
            self._request_children[key] = children
        children[0].observe(elapsed_ms)
        children[1].observe(request_bytes)
        if response_bytes is not None:
            if len(children) < 3:  # no sample until a response had a size
                labels = (self.config.method_label(method), code, *self._model(model_id, vmodel_id))
                children.append(self.response_size.labels(*labels))
            children[2].observe(response_bytes)

    def observe_invoke(
        self, method: str, code: str, elapsed_ms: float, *, model_id: str = "", vmodel_id: str = ""
    ) -> None:
        """One call to the local model server."""
        key = self._key(method, code, model_id, vmodel_id)
        child = self._invoke_children.get(key)
        if child is None:
            labels = (self.config.method_label(method), code, *self._model(model_id, vmodel_id))
            child = self._invoke_children[key] = self.invoke_model_ms.labels(*labels)
        child.observe(elapsed_ms)

    def observe_queue_delay(
        self, delay_ms: float, *, model_id: str = "", vmodel_id: str = ""
    ) -> None:
        self.req_queue_delay_ms.labels(*self._model(model_id, vmodel_id)).observe(delay_ms)


class _ReferenceCounterNames(Collector):
    """The reference's counters as it names them (its dashboard queries
    `modelmesh_loadmodel_failure`, prometheus_client always adds `_total`)."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        for name, counter in (
            ("modelmesh_loadmodel_failure", m.load_failures),
            ("modelmesh_unloadmodel_failure", m.unload_failures),
            ("modelmesh_unloadmodel_attempt_failure", m.unload_attempt_failures),
        ):
            family = UnknownMetricFamily(name, f"{counter._documentation} (reference name)")
            family.add_metric([], counter._value.get())
            yield family
