"""AdapterSettings: the adapter's environment, read once in `__main__`.

Variable names are the reference runtime adapter's, so a ServingRuntime written for
ModelMesh configures mmesh's adapter unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class ServerType(StrEnum):
    MLSERVER = "mlserver"
    TRITON = "triton"
    OVMS = "ovms"
    TORCHSERVE = "torchserve"
    PULLER = "puller"
    """Storage helper of a custom runtime: pull, then call the runtime's own ModelRuntime."""


class AdapterSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    server_type: ServerType = Field(ServerType.MLSERVER, alias="ADAPTER_SERVER_TYPE")
    """Which model server sits behind this adapter."""

    host: str = Field("127.0.0.1", alias="ADAPTER_HOST")
    """Bind address: the router is in the same pod, so loopback is enough."""

    port: int = Field(8085, alias="ADAPTER_PORT")
    """ModelRuntime gRPC port the router calls (the reference's INTERNAL_GRPC_PORT)."""

    runtime_host: str = Field("127.0.0.1", alias="RUNTIME_HOST")
    runtime_port: int = Field(8001, alias="RUNTIME_PORT")
    """Model server's gRPC port, where its repository (load/unload) API lives."""

    runtime_data_endpoint: str = Field("", alias="RUNTIME_DATA_ENDPOINT")
    """`port:N` or `unix:/path` of the server's inference API (TorchServe's gRPC port)."""

    model_server_endpoint: str = Field("", alias="MODEL_SERVER_ENDPOINT")
    """Puller only: `port:N` or `unix:/path` where the custom runtime serves ModelRuntime."""

    container_mem_req_bytes: int | None = Field(None, alias="CONTAINER_MEM_REQ_BYTES")
    """Memory request of the model server container; capacity is derived from it. Required
    for the built-in servers; the puller passes on the custom runtime's own capacity."""

    mem_buffer_bytes: int = Field(256 * MIB, alias="MEM_BUFFER_BYTES")
    """Memory kept back from capacity for the server itself (built-in runtimes set 128 MiB)."""

    loading_concurrency: int = Field(1, ge=1, alias="LOADING_CONCURRENCY")
    load_timeout_ms: int = Field(30_000, ge=100, alias="LOADTIME_TIMEOUT")
    default_model_size_bytes: int = Field(1_000_000, ge=1, alias="DEFAULT_MODELSIZE")
    model_size_multiplier: float = Field(1.25, gt=0, alias="MODELSIZE_MULTIPLIER")
    """Loaded size = bytes on disk x this; a cheap, conservative memory estimate."""

    runtime_version: str = Field("", alias="RUNTIME_VERSION")
    limit_per_model_concurrency: int = Field(0, ge=0, alias="LIMIT_PER_MODEL_CONCURRENCY")
    root_model_dir: Path = Field(Path("/models"), alias="ROOT_MODEL_DIR")
    storage_config_dir: Path = Field(Path("/storage-config"), alias="STORAGE_CONFIG_DIR")
    pvc_mounts_dir: Path = Field(Path("/pvc_mounts"), alias="PVC_MOUNTS_DIR")
    model_config_file: Path | None = Field(None, alias="MODEL_CONFIG_FILE")
    """OVMS: the multi-model config file OVMS was started with (`--config_path`);
    default `<ROOT_MODEL_DIR>/model_config_list.json`."""
    batch_wait_ms: int = Field(100, ge=0, alias="BATCH_WAIT_TIME_MIN_MS")
    """OVMS: how long a load waits for others to share one config reload."""
    ovms_reload_timeout_ms: int = Field(30_000, ge=100, alias="OVMS_RELOAD_TIMEOUT_MS")
    request_batch_size: int = Field(0, ge=0, alias="REQUEST_BATCH_SIZE")
    """TorchServe: `batch_size` of each registration (0 = TorchServe's default)."""
    max_batch_delay_ms: int = Field(0, ge=0, alias="MAX_BATCH_DELAY_MS")
    """TorchServe: `max_batch_delay` of each registration (0 = TorchServe's default)."""
    torchserve_metric_interval_s: int = Field(10, ge=1, alias="TORCHSERVE_METRIC_INTERVAL_SECS")
    """TorchServe: its `metric_time_interval`, how often it measures worker memory; a load
    waits up to one interval for the model's memory before sizing it from disk instead."""
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_json: bool = Field(False, alias="LOG_JSON")

    @model_validator(mode="after")
    def _server_needs(self) -> AdapterSettings:
        if self.server_type is ServerType.PULLER:
            if not self.model_server_endpoint:
                raise ValueError(
                    "MODEL_SERVER_ENDPOINT (port:N or unix:/path of the custom runtime's "
                    "ModelRuntime API) is required with ADAPTER_SERVER_TYPE=puller"
                )
            return self
        if self.container_mem_req_bytes is None:
            raise ValueError(
                f"CONTAINER_MEM_REQ_BYTES is required with ADAPTER_SERVER_TYPE="
                f"{self.server_type} (capacity = it minus MEM_BUFFER_BYTES)"
            )
        if self.capacity_bytes <= 0:
            raise ValueError(
                f"CONTAINER_MEM_REQ_BYTES ({self.container_mem_req_bytes}) must exceed "
                f"MEM_BUFFER_BYTES ({self.mem_buffer_bytes})"
            )
        return self

    @property
    def capacity_bytes(self) -> int:
        return (self.container_mem_req_bytes or 0) - self.mem_buffer_bytes

    @property
    def ovms_config_file(self) -> Path:
        return self.model_config_file or self.root_model_dir / "model_config_list.json"
