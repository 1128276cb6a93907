"""Pure: how pulled model files are laid out for each model server.

The puller leaves a model at `<root>/<modelId>/<name>`. Each server wants its own
repository layout next to it; these functions decide that layout, and `backends/` writes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmesh.adapter.errors import InvalidModelRequest, UnsupportedModelType
from mmesh.core.numbers import whole_number

MLSERVER_IMPLEMENTATIONS: Mapping[str, str] = {
    "sklearn": "mlserver_sklearn.SKLearnModel",
    "xgboost": "mlserver_xgboost.XGBoostModel",
    "lightgbm": "mlserver_lightgbm.LightGBMModel",
    "mllib": "mlserver_mllib.MLlibModel",
}

MLSERVER_SETTINGS_FILE = "model-settings.json"
TRITON_CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True, slots=True)
class TritonModelKind:
    file_name: str
    backend: str = ""
    platform: str = ""


TRITON_KINDS: Mapping[str, TritonModelKind] = {
    "onnx": TritonModelKind("model.onnx", backend="onnxruntime"),
    "pytorch": TritonModelKind("model.pt", backend="pytorch"),
    "tensorflow": TritonModelKind("model.savedmodel", platform="tensorflow_savedmodel"),
    "tensorrt": TritonModelKind("model.plan", platform="tensorrt_plan"),
}


def model_format(model_type: str, key_model_type: Any = None) -> str:
    """The model format name: from the modelKey's `model_type.name` when present, else from
    the registration type, accepting the label forms `mt:sklearn`, `mt:sklearn:0` and
    `mt:sklearn|pv:grpc-v2`."""
    if isinstance(key_model_type, Mapping) and key_model_type.get("name"):
        return str(key_model_type["name"]).lower()
    first = model_type.split("|", 1)[0].strip()
    if first.startswith("mt:"):
        first = first[3:]
    return first.split(":", 1)[0].lower()


def render_mlserver_settings(
    model_id: str,
    fmt: str,
    *,
    model_uri: str,
    user_settings: Mapping[str, Any] | None = None,
    schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """model-settings.json for MLServer. A settings file shipped with the model wins for
    everything but `name` and `parameters.uri`, which must point at this copy."""
    settings: dict[str, Any] = dict(user_settings or {})
    if "implementation" not in settings:
        if fmt not in MLSERVER_IMPLEMENTATIONS:
            supported = ", ".join(sorted(MLSERVER_IMPLEMENTATIONS))
            raise UnsupportedModelType(
                f"model type {fmt!r} is not supported by mlserver (supported: {supported})"
            )
        settings["implementation"] = MLSERVER_IMPLEMENTATIONS[fmt]
    settings["name"] = model_id
    params = dict(settings.get("parameters") or {})
    params["uri"] = model_uri
    settings["parameters"] = params
    if schema:
        settings.update(_mlserver_schema(schema))
    return settings


def _mlserver_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ("inputs", "outputs"):
        tensors = schema.get(side)
        if tensors is None:
            continue
        if not isinstance(tensors, list):
            raise InvalidModelRequest(f"model schema: {side} must be a list")
        out[side] = [
            {"name": t["name"], "datatype": t["datatype"], "shape": list(t.get("shape", []))}
            for t in tensors
        ]
    return out


def parse_schema(text: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelRequest(f"model schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise InvalidModelRequest("model schema must be a JSON object")
    return schema


@dataclass(frozen=True, slots=True)
class TritonLayout:
    """config.pbtxt text and (source, link) pairs, both relative: sources to the pulled
    model path, links to the model's Triton repository directory."""

    config_text: str
    links: tuple[tuple[str, str], ...]


def plan_triton_layout(
    model_id: str,
    fmt: str,
    *,
    pulled_is_dir: bool,
    pulled_entries: Sequence[str],
    user_config: str | None,
) -> TritonLayout:
    """Native Triton layouts (a config.pbtxt plus numeric version dirs) are kept and only
    renamed; a bare model file or directory is placed as version 1 with a generated config."""
    versions = sorted(e for e in pulled_entries if whole_number(e) is not None)
    if pulled_is_dir and user_config is not None and versions:
        return TritonLayout(_rename_config(user_config, model_id), tuple((v, v) for v in versions))
    kind = TRITON_KINDS.get(fmt)
    if kind is None:
        supported = ", ".join(sorted(TRITON_KINDS))
        raise UnsupportedModelType(
            f"model type {fmt!r} is not supported by triton (supported: {supported})"
        )
    config = (
        _rename_config(user_config, model_id)
        if user_config is not None
        else _generated_config(model_id, kind)
    )
    source = kind.file_name if pulled_is_dir and kind.file_name in pulled_entries else "."
    return TritonLayout(config, ((source, f"1/{kind.file_name}"),))


def _generated_config(model_id: str, kind: TritonModelKind) -> str:
    lines = [f'name: "{model_id}"']
    if kind.backend:
        lines.append(f'backend: "{kind.backend}"')
    if kind.platform:
        lines.append(f'platform: "{kind.platform}"')
    return "\n".join(lines) + "\n"


# Only an unindented `name:` is the model's own; nested tensor blocks have names too.
_NAME_LINE = re.compile(r'^name\s*:\s*"[^"\n]*"[ \t]*$', re.MULTILINE)


def _rename_config(config: str, model_id: str) -> str:
    named = f'name: "{model_id}"'
    if _NAME_LINE.search(config):
        return _NAME_LINE.sub(named, config, count=1)
    return f"{named}\n{config}"


# ---------------------------------------------------------------- OVMS

OVMS_ONNX_FILE = "model.onnx"


@dataclass(frozen=True, slots=True)
class OvmsLayout:
    """One link in the model's OVMS directory: `<link>` -> `<pulled path>/<source>`."""

    version: str
    source: str
    link: str


def plan_ovms_layout(
    fmt: str, *, pulled_name: str, pulled_is_dir: bool, pulled_dirs: Sequence[str]
) -> OvmsLayout:
    """OVMS serves `<base_path>/<numeric version>/<model files>`.

    A pulled directory whose subdirectories are all numeric versions is already a model
    repository: its highest version is served under its own number. Any other directory
    becomes version 1; a single file goes into version 1 (an ONNX file as `model.onnx`).
    """
    if pulled_is_dir:
        versions = [d for d in pulled_dirs if whole_number(d)]
        if versions and len(versions) == len(pulled_dirs):
            latest = max(versions, key=int)
            return OvmsLayout(latest, latest, latest)
        return OvmsLayout("1", ".", "1")
    name = OVMS_ONNX_FILE if fmt == "onnx" else pulled_name
    return OvmsLayout("1", ".", f"1/{name}")


# ---------------------------------------------------------------- TorchServe

MAR_SUFFIX = ".mar"
MAR_MANIFEST = "MAR-INF/MANIFEST.json"


def torchserve_store_name(model_id: str, *, archive: bool) -> str:
    """The model's entry in TorchServe's model store (the register call's `url`): one
    plain file name, so `\\` and `/` are escaped as the reference adapter does."""
    escaped = model_id.replace("\\", "\\\\").replace("/", "\\_")
    return escaped + MAR_SUFFIX if archive else escaped


@dataclass(frozen=True, slots=True)
class TorchServeLayout:
    source: str
    """Relative to the pulled path: `.` or the archive found inside a pulled directory."""
    archive: bool
    """A `.mar` file; else an unpacked model directory (TorchServe's no-archive format)."""


def plan_torchserve_layout(
    model_id: str, *, pulled_is_dir: bool, pulled_entries: Sequence[str], has_manifest: bool
) -> TorchServeLayout:
    """A `.mar` file, a directory holding exactly one `.mar`, or an unpacked archive (a
    directory with MAR-INF/MANIFEST.json)."""
    if not pulled_is_dir:
        return TorchServeLayout(".", archive=True)
    if has_manifest:
        return TorchServeLayout(".", archive=False)
    archives = [e for e in pulled_entries if e.endswith(MAR_SUFFIX)]
    if len(archives) == 1:
        return TorchServeLayout(archives[0], archive=True)
    found = ", ".join(sorted(pulled_entries)[:10]) or "nothing"
    raise InvalidModelRequest(
        f"model {model_id} for torchserve must be a .mar archive, a directory holding one "
        f".mar ({len(archives)} found), or an unpacked archive with {MAR_MANIFEST}; "
        f"found {found}"
    )
