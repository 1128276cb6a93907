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

    container_mem_req_bytes: int = Field(alias="CONTAINER_MEM_REQ_BYTES")
    """Memory request of the model server container; capacity is derived from it."""

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
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_json: bool = Field(False, alias="LOG_JSON")

    @model_validator(mode="after")
    def _capacity_is_positive(self) -> AdapterSettings:
        if self.capacity_bytes <= 0:
            raise ValueError(
                f"CONTAINER_MEM_REQ_BYTES ({self.container_mem_req_bytes}) must exceed "
                f"MEM_BUFFER_BYTES ({self.mem_buffer_bytes})"
            )
        return self

    @property
    def capacity_bytes(self) -> int:
        return self.container_mem_req_bytes - self.mem_buffer_bytes
