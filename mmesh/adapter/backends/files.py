"""Small filesystem steps shared by the backends, run off the event loop by callers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def disk_size_bytes(path: Path) -> int:
    """Bytes on disk under `path`, following symbolic links (a PVC model is a link)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path, followlinks=True):
        for name in files:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except OSError:
                continue
    return total


def remove_model_dirs(repository: Path) -> None:
    """Empty a server's repository of model directories, keeping its own files."""
    repository.mkdir(parents=True, exist_ok=True)
    for entry in repository.iterdir():
        if entry.is_dir() or entry.is_symlink():
            remove_tree(entry)
