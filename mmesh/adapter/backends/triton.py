"""Triton behind the adapter: `<root>/_triton_models/<modelId>/config.pbtxt` plus version
directories linking to the pulled files, then an explicit RepositoryModelLoad. Triton must run
with `--model-control-mode=explicit --strict-model-config=false`."""

from __future__ import annotations

import os

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.backends.files import remove_tree, write_text_atomic
from mmesh.adapter.backends.repository import RepositoryBackend
from mmesh.adapter.layout import TRITON_CONFIG_FILE, TritonLayout, plan_triton_layout

REPOSITORY_DIR_NAME = "_triton_models"


class TritonBackend(RepositoryBackend):
    server_name = "triton"
    repository_dir_name = REPOSITORY_DIR_NAME

    def write_layout(self, model: PreparedModel) -> None:
        layout = _plan(model)
        target = self.repository_dir / model.model_id
        remove_tree(target)
        for source, link in layout.links:
            dest = target / link
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink((model.local_path / source).resolve(), dest)
        write_text_atomic(target / TRITON_CONFIG_FILE, layout.config_text)


def _plan(model: PreparedModel) -> TritonLayout:
    path = model.local_path
    is_dir = path.is_dir()
    entries = sorted(p.name for p in path.iterdir()) if is_dir else []
    shipped = path / TRITON_CONFIG_FILE
    user_config = shipped.read_text() if is_dir and shipped.is_file() else None
    return plan_triton_layout(
        model.model_id,
        model.model_format,
        pulled_is_dir=is_dir,
        pulled_entries=entries,
        user_config=user_config,
    )
