"""MLServer behind the adapter: one `model-settings.json` per model under
`<root>/_mlserver_models/<modelId>/` (MLServer's repository root), then an explicit
RepositoryModelLoad. The settings point at the pulled files; nothing is copied."""

from __future__ import annotations

import json
from pathlib import Path

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import read_json_object, write_text_atomic
from mmesh.adapter.backends.repository import RepositoryBackend
from mmesh.adapter.errors import InvalidModelRequest
from mmesh.adapter.layout import MLSERVER_SETTINGS_FILE, render_mlserver_settings

REPOSITORY_DIR_NAME = "_mlserver_models"


class MLServerBackend(RepositoryBackend):
    server_name = "mlserver"
    repository_dir_name = REPOSITORY_DIR_NAME

    def write_layout(self, model: PreparedModel) -> None:
        shipped = model.local_path / MLSERVER_SETTINGS_FILE
        try:
            user_settings = read_json_object(shipped) if model.local_path.is_dir() else None
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidModelRequest(
                f"{MLSERVER_SETTINGS_FILE} shipped with model {model.model_id} is not valid "
                f"JSON: {exc}"
            ) from exc
        uri = _absolute_uri(model.local_path, user_settings)
        settings = render_mlserver_settings(
            model.model_id,
            model.model_format,
            model_uri=str(uri),
            user_settings=user_settings,
            schema=model.schema,
        )
        write_text_atomic(
            self.repository_dir / model.model_id / MLSERVER_SETTINGS_FILE,
            json.dumps(settings, indent=2),
        )


def _absolute_uri(local_path: Path, user_settings: dict[str, object] | None) -> Path:
    """The shipped settings' relative uri is relative to the model dir; default: the model."""
    params = (user_settings or {}).get("parameters")
    uri = params.get("uri") if isinstance(params, dict) else None
    if isinstance(uri, str) and uri:
        resolved = (local_path / uri).resolve()
        if not resolved.is_relative_to(local_path.resolve()):
            raise InvalidModelRequest(f"uri {uri!r} in {MLSERVER_SETTINGS_FILE} escapes the model")
        return resolved
    return local_path
