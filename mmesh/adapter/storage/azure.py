"""I/O: pull model files from Azure Blob Storage with azure-storage-blob's asyncio client.

Credentials come from `connection_string` (account key or SAS, and the endpoint, e.g.
Azurite's); without one the container is read anonymously at `endpoint_url` or
`https://<account_name>.blob.core.windows.net`. Like S3, a path names either one blob or
a "directory": blobs under `<path>/` are all downloaded keeping their sub-paths,
otherwise the blob `<path>` itself becomes the target file. Retries are few and backoff
short, so a dead endpoint fails in seconds. azure-core exceptions are translated to the
StorageError tree in `_map_errors` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import azure.core.exceptions as az_errors
from azure.storage.blob.aio import ContainerClient, ExponentialRetry

from mmesh.adapter.errors import (
    StorageDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
    UnsupportedStorage,
)
from mmesh.adapter.storage.spec import (
    StorageSpec,
    StorageType,
    object_relative_path,
    redact_url,
)

_DENIED_CODES = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "NoAuthenticationInformation",
        "InsufficientAccountPermissions",
        "PublicAccessNotPermitted",
    }
)


_FILE_MODE = 0o644


@dataclass(frozen=True, slots=True)
class _Where:
    endpoint: str
    container: str
    path: str


class AzureBlobProvider:
    """Downloads a blob, or every blob under a prefix, from one container."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 2,
        max_concurrency: int = 4,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._retries = max(0, max_attempts - 1)
        self._max_concurrency = max_concurrency

    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        if spec.type != StorageType.AZURE or not spec.container:
            raise UnsupportedStorage(
                f"azure provider needs an azure spec with a container, got {spec!r}"
            )
        client = self._client(spec)
        # The SDK's endpoint carries a connection string's SAS token in its query.
        where = _Where(redact_url(client.primary_endpoint), spec.container, remote_path)
        with _map_errors(where):
            async with client:
                await self._pull(client, where, target)
        return target

    def _client(self, spec: StorageSpec) -> ContainerClient:
        assert spec.container is not None  # checked by pull()
        options: dict[str, Any] = {
            "connection_timeout": self._connect_timeout_s,
            "read_timeout": self._read_timeout_s,
            "retry_policy": ExponentialRetry(
                initial_backoff=1,
                increment_base=2,
                retry_total=self._retries,
                random_jitter_range=1,
            ),
        }
        try:
            if spec.connection_string is not None:
                return ContainerClient.from_connection_string(
                    spec.connection_string, spec.container, **options
                )
            account_url = spec.endpoint_url or f"https://{spec.account_name}.blob.core.windows.net"
            return ContainerClient(account_url, spec.container, **options)
        except ValueError as exc:
            # The SDK's message never echoes the connection string; keep it that way.
            raise UnsupportedStorage(f"invalid azure storage settings: {exc}") from exc

    async def _pull(self, client: ContainerClient, where: _Where, target: Path) -> None:
        prefix = "" if not where.path else where.path.rstrip("/") + "/"
        blobs = await _list_blobs(client, prefix)
        if blobs:
            for name, relative in blobs:
                await self._download(client, name, target / relative)
        elif where.path and not where.path.endswith("/"):
            await self._download(client, where.path, target)
        else:
            raise StorageNotFound(
                f"no blobs under prefix {prefix!r} in container {where.container!r} "
                f"at {where.endpoint}"
            )

    async def _download(self, client: ContainerClient, name: str, dest: Path) -> None:
        stream = await client.download_blob(name, max_concurrency=self._max_concurrency)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fd, partial = await asyncio.to_thread(
            tempfile.mkstemp, dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
        )
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in stream.chunks():
                    await asyncio.to_thread(out.write, chunk)
                os.fchmod(out.fileno(), _FILE_MODE)  # mkstemp makes 0600; servers may run as others
            await asyncio.to_thread(os.replace, partial, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):  # already renamed or never written
                os.unlink(partial)
            raise


async def _list_blobs(client: ContainerClient, prefix: str) -> list[tuple[str, PurePosixPath]]:
    """Every blob under `prefix` with its path below the target, all checked up front."""
    found: list[tuple[str, PurePosixPath]] = []
    async for blob in client.list_blobs(name_starts_with=prefix or None):
        relative = object_relative_path(prefix, blob.name)
        if relative is not None:
            found.append((blob.name, relative))
    return found


@contextlib.contextmanager
def _map_errors(where: _Where) -> Iterator[None]:
    """Translate azure-core failures into the StorageError tree."""
    try:
        yield
    except az_errors.ResourceNotFoundError as exc:
        raise _not_found(exc, where) from exc
    except az_errors.ClientAuthenticationError as exc:
        raise StorageDenied(
            f"azure credentials rejected for container {where.container!r} at {where.endpoint}"
        ) from exc
    except az_errors.HttpResponseError as exc:
        raise _from_response(exc, where) from exc
    except (az_errors.ServiceRequestError, az_errors.ServiceResponseError) as exc:
        raise StorageUnreachable(f"azure endpoint {where.endpoint} unreachable: {exc}") from exc
    except az_errors.AzureError as exc:
        raise StorageError(f"azure pull of {where.path!r} failed: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"writing {where.path!r} to local disk failed: {exc}") from exc


def _code(exc: az_errors.HttpResponseError) -> str | None:
    # azure-storage attaches the service's x-ms-error-code to the exception it raises.
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code)) if code else None


def _not_found(exc: az_errors.ResourceNotFoundError, where: _Where) -> StorageError:
    at = f"at {where.endpoint}"
    if _code(exc) == "ContainerNotFound":
        return StorageNotFound(f"container {where.container!r} not found {at}")
    if _code(exc) in _DENIED_CODES:
        return StorageDenied(f"access to container {where.container!r} denied {at}")
    return StorageNotFound(f"blob {where.path!r} not found in container {where.container!r} {at}")


def _from_response(exc: az_errors.HttpResponseError, where: _Where) -> StorageError:
    status, code = exc.status_code or 0, _code(exc)
    if status in (401, 403) or code in _DENIED_CODES:
        return StorageDenied(
            f"azure denied access ({code or status}) to container "
            f"{where.container!r} at {where.endpoint}"
        )
    if status >= 500:
        return StorageUnreachable(f"azure endpoint {where.endpoint} failed with HTTP {status}")
    return StorageError(
        f"azure error {code or status} for {where.path!r} in container "
        f"{where.container!r} at {where.endpoint}"
    )
