"""Prometheus collectors with the reference's metric names, all in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 120000)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.api_request_ms = Histogram(
            "modelmesh_api_request_milliseconds",
            "External request time",
            ["method", "code"],
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.invoke_model_ms = Histogram(
            "modelmesh_invoke_model_milliseconds",
            "Runtime call time",
            ["method", "code"],
            buckets=MS_BUCKETS,
            registry=r,
        )
        self.request_size = Histogram(
            "modelmesh_request_size_bytes",
            "Request payload size",
            ["method"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.response_size = Histogram(
            "modelmesh_response_size_bytes",
            "Response payload size",
            ["method"],
            buckets=SIZE_BUCKETS,
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
