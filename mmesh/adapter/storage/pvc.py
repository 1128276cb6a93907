"""I/O: "pull" from a PersistentVolumeClaim by linking, never copying.

The operator mounts each claim read-only at `<pvc_mounts_dir>/<claim name>` in the
adapter and model-server containers alike, so the target becomes a symlink to
`<pvc_mounts_dir>/<name>/<path>` and the model server reads the files in place. The
linked path must exist and, once symlinks inside the claim are followed, stay inside
the claim directory.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from mmesh.adapter.errors import (
    InvalidModelRequest,
    StorageError,
    StorageNotFound,
    UnsupportedStorage,
)
from mmesh.adapter.storage.spec import StorageSpec, StorageType

DEFAULT_PVC_MOUNTS_DIR = Path("/pvc_mounts")


class PvcProvider:
    """Links a file or directory of a mounted claim into the model directory."""

    def __init__(self, mounts_dir: Path = DEFAULT_PVC_MOUNTS_DIR) -> None:
        self._mounts_dir = mounts_dir

    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        return await asyncio.to_thread(self._link, spec, remote_path, target)

    def _link(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        name = spec.name
        if spec.type != StorageType.PVC or not name or name in (".", "..") or "/" in name:
            raise UnsupportedStorage(
                f"pvc provider needs a pvc spec with a claim name, got {spec!r}"
            )
        claim = self._mounts_dir / name
        if not claim.is_dir():
            raise StorageNotFound(f"PVC {name!r} is not mounted at {claim}")
        source = self._source(claim, name, remote_path)
        try:
            _replace_with_link(target, source)
        except OSError as exc:
            raise StorageError(f"cannot link {target} to {source}: {exc}") from exc
        return target

    @staticmethod
    def _source(claim: Path, name: str, remote_path: str) -> Path:
        relative = remote_path.strip("/")
        if ".." in relative.split("/") or "\0" in relative:
            raise InvalidModelRequest(f"path {remote_path!r} escapes PVC {name!r}")
        source = claim / relative if relative else claim
        try:
            real = source.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise StorageNotFound(
                f"{relative!r} not found in PVC {name!r} (mounted at {claim})"
            ) from exc
        if not real.is_relative_to(claim.resolve()):
            raise InvalidModelRequest(f"path {remote_path!r} escapes PVC {name!r}")
        return source


def _replace_with_link(target: Path, source: Path) -> None:
    """Point `target` at `source`, replacing whatever an earlier attempt left there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.symlink_to(source)
