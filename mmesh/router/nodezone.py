"""I/O: the pod's zone, from its Node's `topology.kubernetes.io/zone` label.

The Downward API exposes pod fields only, never node labels, so the operator gives the router
its node name (`NODE_NAME` from `spec.nodeName`) and the router reads its Node once at start
through the Kubernetes API with the pod's service account (the chart grants `get` on
`nodes` to it). MM_ZONE, when set, wins and nothing is read. Any failure (no API in reach,
no permission, no label) is logged and leaves the zone empty: placement then simply does not
spread copies across zones, as before.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LOOKUP_TIMEOUT_S = 5.0


def zone_of(node: Mapping[str, Any]) -> str:
    """The zone a Node object carries in its labels ('' when none)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for label in ZONE_LABELS:
        value = labels.get(label)
        if isinstance(value, str) and value:
            return value
    return ""


def api_base(*, explicit_url: str, service_host: str, service_port: str) -> str:
    """The API server to ask: MM_KUBE_API_URL, else the in-cluster Service address."""
    if explicit_url:
        return explicit_url.rstrip("/")
    if service_host:
        host = f"[{service_host}]" if ":" in service_host else service_host
        return f"https://{host}:{service_port or '443'}"
    return ""


async def lookup_zone(
    node_name: str, base_url: str, *, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> str:
    """The zone of `node_name` as the API server reports it; '' when it cannot be read."""
    if not node_name or not base_url:
        return ""
    headers = {"Accept": "application/json"}
    token = account_dir / "token"
    if token.exists():
        headers["Authorization"] = f"Bearer {token.read_text().strip()}"
    ca = account_dir / "ca.crt"
    context: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca)) if ca.exists() else True
    )
    url = f"{base_url}/api/v1/nodes/{node_name}"
    try:
        timeout = aiohttp.ClientTimeout(total=LOOKUP_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers, ssl=context) as response,
        ):
            if response.status != 200:
                logger.warning(
                    "zone: GET %s answered %d (the pod's service account needs get on nodes); "
                    "running without a zone",
                    url,
                    response.status,
                )
                return ""
            node = await response.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        logger.warning("zone: reading node %s from %s failed: %r", node_name, base_url, exc)
        return ""
    zone = zone_of(node)
    if not zone:
        logger.info("zone: node %s has no %s label", node_name, ZONE_LABELS[0])
    return zone
