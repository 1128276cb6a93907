"""OperatorSettings: the operator container's environment, read once at startup.

Names follow modelmesh-serving's controller (NAMESPACE, NAMESPACE_SCOPE, ETCD_SECRET_NAME).
The etcd connection comes from `ETCD_CONNECTION`, read like the router's KV_STORE: the
`etcd_connection` JSON itself, the path of a file holding it (or of the mounted Secret's
directory), or plain `host:port[,host:port]` endpoints; an `etcd:` prefix is accepted.
Kubernetes credentials are kopf's business (in-cluster service account or KUBECONFIG).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmesh.core.etcd_config import EtcdConnection

CONFIG_MAP_NAME = "model-serving-config"
"""The user's ConfigMap in the operator's namespace (key `config.yaml`)."""
CONFIG_MAP_KEY = "config.yaml"
DEFAULTS_PATH = "/etc/model-serving/config/default/config-defaults.yaml"
"""Where the reference mounts the defaults ConfigMap; the packaged file is used without it."""


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    namespace: str = Field("modelmesh-serving", alias="NAMESPACE")
    """The operator's own namespace: holds model-serving-config and is always managed."""
    namespace_scope: bool = Field(False, alias="NAMESPACE_SCOPE")
    """True: serve only `namespace`, etcd keys directly under the root prefix. False
    (cluster scope): every namespace with ModelMesh resources, keys under
    `<root_prefix>/mm_ns/<namespace>`."""
    etcd_connection_spec: str = Field(alias="ETCD_CONNECTION", repr=False)
    """`etcd_connection` JSON, a file holding it, or `host:port` endpoints."""
    etcd_secret_name: str = Field("model-serving-etcd", alias="ETCD_SECRET_NAME")
    """Secret the operator writes into each managed namespace for the runtime pods (cluster
    scope); in namespace scope it must already exist. Do not give the operator's own Secret
    this name in its namespace under cluster scope: it would be overwritten."""
    defaults_path: Path = Field(Path(DEFAULTS_PATH), alias="CONFIG_DEFAULTS_PATH")
    health_host: str = Field("0.0.0.0", alias="HEALTH_HOST")  # kubelet probes it from outside
    health_port: int = Field(8081, ge=0, lt=65536, alias="HEALTH_PORT")
    """kopf's liveness endpoint `/healthz`; 0 turns it off."""
    post_events: bool = Field(True, alias="POST_EVENTS")
    """Post Kubernetes Events for handler outcomes (kopf)."""
    status_repoll_s: float = Field(1.0, gt=0, alias="STATUS_REPOLL_SECS")
    """Re-read a model's state this often while it is Loading (no etcd event says 'done')."""
    claims_poll_s: float = Field(30.0, gt=0, alias="CLAIMS_POLL_SECS")
    """How often the storage Secret and the PVCs models name are re-read (nothing watches
    them); a change reconciles the namespace's Deployments."""
    pod_name: str = Field("", alias="POD_NAME")
    """This replica's pod (Downward API): its leader identity, the same after a restart."""
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_json: bool = Field(False, alias="LOG_JSON")
    """One JSON object per log line (for collectors); plain text otherwise."""

    def etcd_connection(self) -> EtcdConnection:
        """Parse ETCD_CONNECTION; raise ValueError if it is none of the accepted forms."""
        return EtcdConnection.from_json(self.etcd_connection_text())

    def etcd_connection_text(self) -> str:
        """The `etcd_connection` JSON document ETCD_CONNECTION stands for."""
        spec = self.etcd_connection_spec.strip().removeprefix("etcd:").strip()
        if spec.startswith("{"):
            return spec
        if spec.startswith("/"):
            path = Path(spec)
            if path.is_dir():  # a mounted Secret: the key's file inside it
                path = path / "etcd_connection"
            return path.read_text()
        if spec and ("://" in spec or ":" in spec):
            return json.dumps({"endpoints": spec})
        raise ValueError(f"ETCD_CONNECTION: {spec!r} is neither JSON, a file, nor endpoints")

    def etcd_connection_for(
        self, root_prefix: str, *, credentials: tuple[str, str] | None = None
    ) -> str:
        """The `etcd_connection` JSON with its root_prefix replaced (for runtime pods), and
        its `userid` / `password` replaced by `credentials` when given."""
        doc = json.loads(self.etcd_connection_text())
        doc["root_prefix"] = root_prefix
        if credentials is not None:
            doc["userid"], doc["password"] = credentials
        return json.dumps(doc, separators=(",", ":"))
