"""Pure: what OVMS's and TorchServe's management APIs are sent and what their answers mean.

OVMS (REST, `--rest_port`, 8888 in the shipped runtime): the adapter owns the multi-model
config file (`{"model_config_list": [{"config": {"name", "base_path"}}]}`), rewrites it and
calls `POST /v1/config/reload` (201 reloaded, 200 nothing to do; any other code with
`{"error": "..."}`), or reads `GET /v1/config`. Both answer
`{"<model>": {"model_version_status": [{"version", "state", "status": {"error_code",
"error_message"}}]}}`; a model serves once a version is `AVAILABLE`.

TorchServe (REST management API): `POST /models?url=<archive in the model store>&model_name=...
&initial_workers=N&synchronous=true`, `DELETE /models/{name}`, `GET /models` (paged with
`limit` / `next_page_token`), `GET /models/{name}` (workers with `memoryUsage`, 0 until
TorchServe's next metrics pass). Errors are
`{"code": <http status>, "type": "<Java exception>", "message": "..."}`.

`METHOD_INFOS` is what each server's adapter reports in runtimeStatus: the data-plane methods
and the field path the router writes the concrete model id into.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

V2_INFER = "inference.GRPCInferenceService/ModelInfer"
V2_METADATA = "inference.GRPCInferenceService/ModelMetadata"
TFS_PREDICT = "tensorflow.serving.PredictionService/Predict"
TORCHSERVE_PREDICTIONS = "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"

V2_METHOD_INFOS: Mapping[str, tuple[int, ...]] = {V2_INFER: (1,), V2_METADATA: (1,)}
METHOD_INFOS: Mapping[str, Mapping[str, tuple[int, ...]]] = {
    "mlserver": V2_METHOD_INFOS,
    "triton": V2_METHOD_INFOS,
    # PredictRequest.model_spec (1) .name (1); OVMS also serves the V2 API.
    "ovms": {TFS_PREDICT: (1, 1), **V2_METHOD_INFOS},
    # PredictionsRequest.model_name (1).
    "torchserve": {TORCHSERVE_PREDICTIONS: (1,), **V2_METHOD_INFOS},
}

OVMS_AVAILABLE = "AVAILABLE"


# ---------------------------------------------------------------- OVMS


def render_ovms_config(models: Mapping[str, str]) -> str:
    """The multi-model config file for `models` (name -> base path), in a stable order."""
    entries = [{"config": {"name": n, "base_path": models[n]}} for n in sorted(models)]
    return json.dumps({"model_config_list": entries}, indent=1) + "\n"


def parse_ovms_config(text: str) -> dict[str, str]:
    """name -> base path of a config file written earlier; {} for anything unreadable."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}
    out: dict[str, str] = {}
    entries = doc.get("model_config_list") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        config = entry.get("config") if isinstance(entry, dict) else None
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            out[config["name"]] = str(config.get("base_path", ""))
    return out


def ovms_error_text(status: int, body: str) -> str:
    """The `error` of an OVMS error body, else the raw body, with the HTTP status."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        doc = None
    message = doc.get("error") if isinstance(doc, dict) else None
    return f"HTTP {status}: {message if isinstance(message, str) else body.strip()[:500]}"


def ovms_load_failure(config_status: Mapping[str, Any], model_id: str) -> str | None:
    """None when OVMS serves `model_id`, else why not (from its version statuses)."""
    entry = config_status.get(model_id)
    versions = entry.get("model_version_status") if isinstance(entry, dict) else None
    if not isinstance(versions, list):
        return f"OVMS reports no status for model {model_id} after the config reload"
    if not versions:
        return (
            f"OVMS found no version of model {model_id} (no numeric version directory "
            "under its base_path)"
        )
    described = []
    for version in versions:
        if not isinstance(version, dict):
            continue
        if version.get("state") == OVMS_AVAILABLE:
            return None
        raw_status = version.get("status")
        status = raw_status if isinstance(raw_status, dict) else {}
        described.append(
            f"version {version.get('version')} is {version.get('state')} "
            f"(error_code {status.get('error_code')!r}: {status.get('error_message')!r})"
        )
    return f"OVMS did not load model {model_id}: " + "; ".join(described)


# ---------------------------------------------------------------- TorchServe


@dataclass(frozen=True, slots=True)
class TorchServePorts:
    management: int
    """REST management API (the adapter's RUNTIME_PORT)."""
    grpc_inference: int
    """gRPC inference (the runtime's grpcDataEndpoint)."""
    inference: int = 8083
    """REST inference: TorchServe's default 8080 is the router's pod-to-pod port."""
    metrics: int = 8082


def render_torchserve_config(
    model_store: str, ports: TorchServePorts, *, metric_interval_s: int
) -> str:
    """`config.properties` for a TorchServe the adapter drives (TS_CONFIG_FILE).

    Everything binds to loopback; TS_* environment variables still override
    (`enable_envvars_config`). TorchServe's gRPC management port is moved next to the gRPC
    inference port so that its default (7071) is free for the REST management API.
    TorchServe measures its workers' memory (what a model's size is read from) once every
    `metric_time_interval` seconds, 60 by default; the reference adapter sets 10.
    """
    lines = [
        f"model_store={model_store}",
        f"inference_address=http://127.0.0.1:{ports.inference}",
        f"management_address=http://127.0.0.1:{ports.management}",
        f"metrics_address=http://127.0.0.1:{ports.metrics}",
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_port={ports.grpc_inference + 2}",
        f"metric_time_interval={metric_interval_s}",
        "enable_envvars_config=true",
        "enable_model_api=true",
        "disable_token_authorization=true",
        "load_models=",
    ]
    return "\n".join(lines) + "\n"


def torchserve_error_text(status: int, body: str) -> str:
    """`<type>: <message>` of a TorchServe error body, else the raw body, with the status."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        kind = doc.get("type")
        prefix = f"{kind}: " if isinstance(kind, str) and kind else ""
        return f"HTTP {status}: {prefix}{doc['message']}"
    return f"HTTP {status}: {body.strip()[:500]}"


def torchserve_model_page(body: Any) -> tuple[list[str], str | None]:
    """Model names of one `GET /models` page and the next page's token (None: last page)."""
    if not isinstance(body, dict):
        return [], None
    models = body.get("models")
    names = [
        str(m["modelName"])
        for m in (models if isinstance(models, list) else [])
        if isinstance(m, dict) and m.get("modelName")
    ]
    token = body.get("nextPageToken")
    return names, (str(token) if token not in (None, "", 0, "0") else None)


def torchserve_worker_memory(describe: Any) -> int:
    """Bytes the model's workers use, from `GET /models/{name}`; 0 while none reports any."""
    if not isinstance(describe, list) or not describe or not isinstance(describe[0], dict):
        return 0
    workers = describe[0].get("workers")
    total = 0
    for worker in workers if isinstance(workers, list) else []:
        usage = worker.get("memoryUsage") if isinstance(worker, dict) else None
        if not isinstance(usage, int) or usage <= 0:
            return 0
        total += usage
    return total
