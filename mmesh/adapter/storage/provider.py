"""I/O port: the StorageProvider protocol and the choice of provider for a spec.

The adapter's loading pipeline resolves a `StorageSpec` (`spec.py`), asks
`provider_for(spec)` for the provider of its type and awaits `pull`. One module per
storage kind implements it: `s3.py`, `http.py`, `pvc.py`, `azure.py`, `gcs.py` (the last
two imported on first use). Providers raise only the adapter's StorageError tree
(InvalidModelRequest for paths that escape the target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, assert_never

from mmesh.adapter.errors import UnsupportedStorage
from mmesh.adapter.storage.http import HttpProvider
from mmesh.adapter.storage.pvc import DEFAULT_PVC_MOUNTS_DIR, PvcProvider
from mmesh.adapter.storage.s3 import S3Provider
from mmesh.adapter.storage.spec import StorageSpec, StorageType

__all__ = ["DEFAULT_PVC_MOUNTS_DIR", "StorageProvider", "provider_for"]


class StorageProvider(Protocol):
    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        """Fetch `remote_path` to `target` and return the local model path.

        A single object becomes the file `target`; a directory or prefix becomes the
        directory `target` with every file at its relative sub-path (a PVC path becomes a
        symlink instead). `remote_path` is `LocalTarget.remote_path`, leading slashes
        already trimmed; `target` is `LocalTarget.local_path`.
        """
        ...


def provider_for(
    spec: StorageSpec, *, pvc_mounts_dir: Path = DEFAULT_PVC_MOUNTS_DIR
) -> StorageProvider:
    """The provider that pulls from `spec`'s kind of storage."""
    match spec.type:
        case StorageType.S3:
            return S3Provider()
        case StorageType.HTTP:
            return HttpProvider()
        case StorageType.PVC:
            return PvcProvider(pvc_mounts_dir)
        case StorageType.AZURE:
            return _azure_provider()
        case StorageType.GCS:
            return _gcs_provider()
        case _ as unreachable:
            assert_never(unreachable)


def _azure_provider() -> StorageProvider:
    # Imported on first use: the Azure SDK is optional and slow to import.
    try:
        from mmesh.adapter.storage.azure import AzureBlobProvider
    except ImportError as exc:
        raise UnsupportedStorage(
            "azure storage needs the azure-storage-blob package, which is not installed"
        ) from exc
    return AzureBlobProvider()


def _gcs_provider() -> StorageProvider:
    # Imported on first use: the Google client is optional and slow to import.
    try:
        from mmesh.adapter.storage.gcs import GcsProvider
    except ImportError as exc:
        raise UnsupportedStorage(
            "gcs storage needs the google-cloud-storage package, which is not installed"
        ) from exc
    return GcsProvider()
