"""RouterSettings: the `mm` container's environment, read once in `__main__`.

Names are the reference router's (MM_*, INTERNAL_*, KV_STORE, SHUTDOWN_TIMEOUT_MS) so the
operator can wire a runtime pod exactly as ModelMesh Serving does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.failures import DEFAULT_FAILURE_EXPIRY_MS
from mmesh.router.metricsconfig import MetricsConfig, parse_metrics
from mmesh.router.tls import TlsPolicy, tls_policy

MIB = 1024 * 1024


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )

    service_name: str = Field("modelmesh-serving", alias="MM_SERVICE_NAME")
    """The mesh ("slot") this router belongs to; every router of one service shares a cache."""

    host: str = Field("127.0.0.1", alias="MM_BIND_HOST")
    """Address every listener binds to."""

    grpc_port: int = Field(8033, alias="MM_SVC_GRPC_PORT")
    internal_port: int = Field(8080, alias="MM_INTERNAL_GRPC_PORT")
    """Pod-to-pod port: peer routers forward requests here."""
    pod_ip: str = Field("", alias="WKUBE_POD_IPADDR")
    """Address peers use to reach this pod; defaults to the bind address."""
    max_message_bytes: int = Field(16 * MIB, alias="MM_SVC_GRPC_MAX_MSG_SIZE")
    rest_port: int = Field(8008, alias="REST_PROXY_LISTEN_PORT")
    """V2 REST; 0 disables it."""
    probe_port: int = Field(8089, alias="MM_PROBE_PORT")
    prestop_port: int = Field(8090, alias="MM_PRESTOP_WAIT_PORT")
    """`GET /prestop` here starts the shutdown and answers once models have moved; the
    runtime containers' preStop hook calls it so they outlive the router's migration."""
    metrics: str = Field("prometheus:port=2112;scheme=http", alias="MM_METRICS")
    """`prometheus:port=N[;scheme=http]` or `disabled`."""

    runtime_host: str = Field("127.0.0.1", alias="INTERNAL_HOST")
    runtime_port: int = Field(8085, alias="INTERNAL_GRPC_PORT")
    """The runtime's ModelRuntime API (the adapter)."""
    serving_port: int = Field(0, alias="INTERNAL_SERVING_GRPC_PORT")
    """The runtime's inference data port; 0 = same as INTERNAL_GRPC_PORT (custom runtimes)."""

    kv_store: str = Field(alias="KV_STORE", repr=False)  # may hold the etcd password
    """`etcd:<path to etcd_connection JSON>`, `etcd:<JSON>` or `etcd:host:port`."""
    max_inflight_per_model: int = Field(0, ge=0, alias="MM_MAX_INFLIGHT_PER_MODEL")
    """Requests one model may have in flight through this router at once; more are refused
    with RESOURCE_EXHAUSTED (gRPC) / 429 (REST). 0 = unbounded, as in ModelMesh, whose router
    queues every request: a bound is a policy for whoever runs the mesh, not a surprise for
    someone moving over."""

    pod_name: str = Field("", alias="WKUBE_POD_NAME")
    instance_id: str = Field("", alias="MM_INSTANCE_ID")
    """Defaults to the last 12 characters of the pod name, as in the reference."""
    location: str = Field("", alias="MM_LOCATION")
    zone: str = Field("", alias="MM_ZONE")
    labels: str = Field("", alias="MM_LABELS")
    """Comma-separated placement labels (mt:/pv:/rt:)."""
    default_vmodel_owner: str = Field("", alias="MM_DEFAULT_VMODEL_OWNER")

    load_failure_expiry_ms: int = Field(
        DEFAULT_FAILURE_EXPIRY_MS, alias="MM_LOAD_FAILURE_EXPIRY_TIME_MS"
    )
    startup_timeout_s: float = Field(180.0, alias="MODEL_SERVICE_STARTUP_TIMEOUT_SECS")
    shutdown_timeout_ms: int = Field(90_000, alias="SHUTDOWN_TIMEOUT_MS")
    min_churn_age_ms: int | None = Field(None, alias="MM_MIN_CHURN_AGE_MS")
    """Models used less than this long ago are not evicted to make room; a load that finds
    no other room waits up to the load timeout, then fails with "cache churn". Unset: 0
    with the `value` eviction policy (its frequency ordering already keeps the models in
    steady use); with `lru`, 10 x max(3 s, load timeout / 3), as the reference computes it."""
    instance_lease_ttl_s: int = Field(10, alias="MM_INSTANCE_LEASE_TTL_SECS")
    scaleup_rpm_threshold: int = Field(2000, ge=10, alias="MM_SCALEUP_RPM_THRESHOLD")
    """Requests per minute on one copy above which another copy is added."""
    rate_check_interval_ms: int = Field(10_000, ge=100, alias="MM_RATECHECK_INTERVAL_MS")
    reap_grace_s: float = Field(30.0, alias="MM_REAP_GRACE_SECS")
    second_copy_age_s: float = Field(420.0, alias="MM_SECOND_COPY_MIN_AGE_SECS")
    """A single-copy model in use for this long gets a second copy (high availability)."""
    second_copy_gap_s: float = Field(2400.0, alias="MM_SECOND_COPY_MAX_GAP_SECS")
    """A pause in use longer than this restarts the second-copy clock."""
    """How long an instance must be gone before its copies leave the registry."""
    reconcile_interval_s: float = Field(30.0, gt=0, alias="MM_RECONCILE_INTERVAL_SECS")
    """How often each router compares its cache with the registry and checks that its
    runtime still holds its models (the reference's janitor: every 6 minutes)."""
    runtime_check_interval_s: float = Field(5.0, gt=0, alias="MM_RUNTIME_CHECK_INTERVAL_SECS")
    """How often a few loaded models are checked with the model server's ModelReady, so a
    runtime that restarted and lost its models is noticed with no request."""
    migrate_cutoff_s: float = Field(3600.0, alias="MM_SHUTDOWN_MIGRATE_CUTOFF_SECS")
    """On shutdown, models used more recently than this get a copy elsewhere first."""

    scaledown_interval_s: float = Field(360.0, gt=0, alias="MM_SCALEDOWN_INTERVAL_SECS")
    """How often this pod judges its extra copies for scale-down (the reference janitor's
    period)."""
    scaledown_max_free_pct: float = Field(5.0, ge=0, le=100, alias="MM_SCALEDOWN_MAX_FREE_PCT")
    """Idle extra copies are removed only while the mesh has at most this much free space
    (the reference: >= 95 % full); 100 removes them whenever they are idle."""
    copy_idle_max_s: float = Field(36_000.0, ge=0, alias="MM_COPY_IDLE_MAX_SECS")
    """An extra copy is idle once unused for 10 % of the cache age, at most this long and at
    least MM_SECOND_COPY_MAX_GAP_SECS."""
    copy_settle_s: float = Field(1800.0, ge=0, alias="MM_COPY_SETTLE_SECS")
    """No copy of a model is removed this soon after one of its copies started loading."""
    copy_unload_gap_s: float = Field(80.0, ge=0, alias="MM_COPY_UNLOAD_GAP_SECS")
    """At most one copy of a model is removed per this long."""
    copy_drain_s: float = Field(30.0, ge=0, alias="MM_COPY_DRAIN_SECS")
    """A removed copy waits up to this long for requests still running on it to finish."""
    eviction_policy: str = Field("value", alias="MM_EVICTION_POLICY")
    """`value` (default): evict the model whose reload costs least per unit of space, by
    recent use frequency and measured load time (mmesh.router.eviction); `lru`: the least
    recently used (the reference's policy)."""
    eviction_tau_ms: int = Field(60_000, gt=0, alias="MM_EVICTION_TAU_MS")
    """`value` policy: time constant over which a model's use frequency decays."""
    min_loaded_age_ms: int = Field(50, ge=0, alias="MM_MIN_LOADED_AGE_MS")
    """A model loaded less than this long ago is not evicted to make room (its first
    requests may still be on their way to the runtime). Kept short: a just-loaded one-off
    model is usually the best victim, and the guard forbids it."""

    tls_key_cert_path: str = Field("", alias="MM_TLS_KEY_CERT_PATH")
    """PEM certificate chain; with MM_TLS_PRIVATE_KEY_PATH, TLS on every client and peer
    port (see mmesh.router.tls)."""
    tls_private_key_path: str = Field("", alias="MM_TLS_PRIVATE_KEY_PATH")
    tls_private_key_passphrase: str = Field("", alias="MM_TLS_PRIVATE_KEY_PASSPHRASE", repr=False)
    tls_client_auth: str = Field("", alias="MM_TLS_CLIENT_AUTH")
    """NONE (default), OPTIONAL or REQUIRE: client certificates on 8033 and 8008."""
    tls_trust_cert_path: str = Field("", alias="MM_TLS_TRUST_CERT_PATH")
    """Comma-separated PEM files client and peer certificates are checked against;
    default: the key certificate."""

    log_level: str = Field("INFO", alias="MM_LOG_LEVEL")
    log_json: bool = Field(False, alias="MM_LOG_JSON")
    log_each_invoke: bool = Field(False, alias="MM_LOG_EACH_INVOKE")
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", alias="MM_EVENT_LOOP")
    """The event loop the router runs on: uvloop (libuv; about a tenth less CPU per
    forwarded request, see bench/README.md) or the standard library's asyncio."""
    keep_payload_buffers: bool = Field(True, alias="MM_KEEP_PAYLOAD_BUFFERS")
    """Freed payload buffers stay in the heap for the next request instead of going back to
    the kernel (glibc thresholds, see mmesh.router.heap): a third less CPU per 1 MiB
    request, for up to 64 MiB of memory kept after a burst of large requests."""

    inference_timeout_ms: int = Field(0, ge=0, alias="MM_INFERENCE_TIMEOUT_MS")
    """Default deadline of an inference request (gRPC and REST), from its arrival here until
    its answer; the `mm-timeout-ms` header overrides it per request, a client's own gRPC
    deadline wins when shorter. 0: no default (the reference has none)."""
    payload_processors: str = Field("", alias="MM_PAYLOAD_PROCESSORS")
    """Space-separated `logger://...` / `http(s)://host:port/path` URIs, with an optional
    `?modelId` filter and `#method` filter (see mmesh.router.payloads)."""
    payload_processors_capacity: int = Field(64, ge=1, alias="MM_PAYLOAD_PROCESSORS_CAPACITY")
    """Payloads waiting for the sinks; more are dropped and counted."""
    payload_processors_threads: int = Field(2, ge=1, alias="MM_PAYLOAD_PROCESSORS_THREADS")
    """Payloads sent at once."""
    runtime_socket_path: str = Field("", alias="INTERNAL_GRPC_SOCKET_PATH")
    """The runtime's ModelRuntime API on a unix socket; set, it replaces INTERNAL_GRPC_PORT."""
    serving_socket_path: str = Field("", alias="INTERNAL_SERVING_GRPC_SOCKET_PATH")
    """The runtime's inference API on a unix socket; set, it replaces the serving port."""
    node_name: str = Field("", alias="NODE_NAME")
    """The pod's node (`spec.nodeName`); with MM_ZONE unset, the router reads the node's
    `topology.kubernetes.io/zone` label from the Kubernetes API (mmesh.router.nodezone)."""

    kube_api_url: str = Field("", alias="MM_KUBE_API_URL")
    """Kubernetes API for the zone lookup; default: the in-cluster Service address."""
    kube_service_host: str = Field("", alias="KUBERNETES_SERVICE_HOST")
    kube_service_port: str = Field("", alias="KUBERNETES_SERVICE_PORT")

    @field_validator("eviction_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value.strip().lower() not in ("lru", "value"):
            raise ValueError("MM_EVICTION_POLICY must be 'value' or 'lru'")
        return value.strip().lower()

    @field_validator("kv_store")
    @classmethod
    def _etcd_only(cls, value: str) -> str:
        if not value.startswith("etcd:"):
            raise ValueError("KV_STORE must start with 'etcd:'")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> RouterSettings:
        self.tls_policy()
        return self

    @model_validator(mode="after")
    def _metrics_valid(self) -> RouterSettings:
        parse_metrics(self.metrics)
        return self

    def tls_policy(self) -> TlsPolicy | None:
        """None when TLS is off; ValueError when the MM_TLS_* values contradict."""
        return tls_policy(
            cert_path=self.tls_key_cert_path,
            key_path=self.tls_private_key_path,
            client_auth=self.tls_client_auth,
            trust_paths=self.tls_trust_cert_path,
            key_passphrase=self.tls_private_key_passphrase,
        )

    @property
    def resolved_instance_id(self) -> str:
        if self.instance_id:
            return self.instance_id
        if self.pod_name:
            return self.pod_name[-12:]
        raise ValueError("set MM_INSTANCE_ID or WKUBE_POD_NAME")

    @property
    def runtime_target(self) -> str:
        """gRPC target of the ModelRuntime API: `unix:/path` or host:port."""
        if self.runtime_socket_path:
            return f"unix:{self.runtime_socket_path}"
        return f"{self.runtime_host}:{self.runtime_port}"

    @property
    def serving_target(self) -> str:
        """gRPC target of the inference API; the ModelRuntime target when none is set."""
        if self.serving_socket_path:
            return f"unix:{self.serving_socket_path}"
        if self.serving_port:
            return f"{self.runtime_host}:{self.serving_port}"
        return self.runtime_target

    @property
    def endpoint(self) -> str:
        return f"{self.pod_ip or self.host}:{self.internal_port}"

    @property
    def label_list(self) -> tuple[str, ...]:
        return tuple(sorted({x.strip() for x in self.labels.split(",") if x.strip()}))

    @property
    def metrics_config(self) -> MetricsConfig:
        return parse_metrics(self.metrics)

    @property
    def metrics_port(self) -> int | None:
        config = self.metrics_config
        return config.port if config.enabled else None

    @property
    def metrics_https(self) -> bool:
        """MM_METRICS asks for `scheme=https` (served so only when TLS is on)."""
        return self.metrics_config.https

    def etcd_connection(self) -> EtcdConnection:
        spec = self.kv_store.removeprefix("etcd:").strip()
        if spec.startswith("{"):
            return EtcdConnection.from_json(spec)
        path = Path(spec)
        if spec.startswith("/") and path.exists():
            return EtcdConnection.from_json(path.read_text())
        if "://" in spec or (":" in spec and not spec.startswith("/")):
            return EtcdConnection.from_json(json.dumps({"endpoints": spec}))
        raise ValueError(f"KV_STORE: {spec!r} is neither an etcd_connection file nor endpoints")
