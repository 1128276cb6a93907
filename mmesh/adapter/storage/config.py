"""I/O: read the `storage-config` secret as the kubelet mounts it.

A Secret volume holds one file per key, each a symlink `<key> -> ..data/<key>`, where
`..data` is itself a symlink to a timestamped directory that the kubelet swaps on update.
Entries whose names start with a dot are that machinery and are skipped. The directory is
read again on every model load, never cached, so secret updates take effect as soon as
the kubelet refreshes the mount. The adapter's loading pipeline calls this and hands the
result to `spec.resolve_storage`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmesh.adapter.errors import UnsupportedStorage


def read_storage_configs(directory: Path) -> dict[str, dict[str, Any]]:
    """Every storage key in `directory` with its parsed JSON entry; {} if it is absent.

    An entry that is not a UTF-8 JSON object raises UnsupportedStorage naming its key
    (never its content: entries hold credentials).
    """
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return {}
    configs: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            raw = entry.read_bytes()
        except FileNotFoundError:  # removed by a secret update since the listing
            continue
        configs[entry.name] = _parse_entry(entry.name, raw)
    return configs


def _parse_entry(key: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UnsupportedStorage(
            f"storage-config key {key!r} is not valid JSON (line {exc.lineno}, "
            f"column {exc.colno}: {exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise UnsupportedStorage(f"storage-config key {key!r} is not UTF-8 text") from exc
    if not isinstance(doc, dict):
        raise UnsupportedStorage(f"storage-config key {key!r} must be a JSON object")
    return doc
