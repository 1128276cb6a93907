"""I/O: pull model files from Google Cloud Storage with google-cloud-storage.

The client is synchronous, so each pull runs in one worker thread. With `private_key` +
`client_email` the pull authenticates as that service account (token from `token_uri`,
read-only scope); without them requests are anonymous. The client is always given an
explicit project placeholder and credentials, so it never probes the environment or a
metadata server. Like S3, a path names either one object or a "directory" whose objects
are all downloaded keeping their sub-paths. Retries stop after a few seconds. Google
client exceptions are translated to the StorageError tree in `_map_errors` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import google.api_core.exceptions as api_errors
import google.auth.exceptions as auth_errors
import requests
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage  # type: ignore[import-untyped]  # ships no py.typed marker
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]  # idem
from google.oauth2 import service_account

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

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_PROJECT_PLACEHOLDER = "mmesh-unused"  # downloads need no project; stops project discovery


@dataclass(frozen=True, slots=True)
class _Where:
    endpoint: str
    bucket: str
    path: str
    listing: bool = False
    """True while listing, where a 404 means the bucket is missing."""


class GcsProvider:
    """Downloads an object, or every object under a prefix, from one bucket."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        retry_timeout_s: float = 3.0,
    ) -> None:
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._retry = DEFAULT_RETRY.with_timeout(retry_timeout_s).with_delay(
            initial=0.2, maximum=1.0
        )

    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        return await asyncio.to_thread(self._pull, spec, remote_path, target)

    def _pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        if spec.type != StorageType.GCS or not spec.bucket:
            raise UnsupportedStorage(f"gcs provider needs a gcs spec with a bucket, got {spec!r}")
        endpoint = redact_url(spec.endpoint_url or "https://storage.googleapis.com")
        where = _Where(endpoint, spec.bucket, remote_path, listing=True)
        prefix = "" if not remote_path else remote_path.rstrip("/") + "/"
        with _map_errors(where):
            bucket = _client(spec).bucket(spec.bucket)
            objects = self._list(bucket, prefix)
        with _map_errors(dataclasses.replace(where, listing=False)):
            if objects:
                for name, relative in objects:
                    self._download(bucket, name, target / relative)
            elif remote_path and not remote_path.endswith("/"):
                self._download(bucket, remote_path, target)
            else:
                raise StorageNotFound(
                    f"no objects under prefix {prefix!r} in bucket {spec.bucket!r} at {endpoint}"
                )
        return target

    def _list(self, bucket: Any, prefix: str) -> list[tuple[str, PurePosixPath]]:
        found: list[tuple[str, PurePosixPath]] = []
        for blob in bucket.list_blobs(prefix=prefix, timeout=self._timeout, retry=self._retry):
            relative = object_relative_path(prefix, blob.name)
            if relative is not None:
                found.append((blob.name, relative))
        return found

    def _download(self, bucket: Any, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The client removes a partially written file when a download fails.
        bucket.blob(name).download_to_filename(str(dest), timeout=self._timeout, retry=self._retry)


def _client(spec: StorageSpec) -> Any:
    options = {"api_endpoint": spec.endpoint_url} if spec.endpoint_url else None
    return storage.Client(
        project=_PROJECT_PLACEHOLDER, credentials=_credentials(spec), client_options=options
    )


def _credentials(spec: StorageSpec) -> Credentials:
    if spec.private_key is None or spec.client_email is None:
        return AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth lacks hints
    info = {
        "type": "service_account",
        "private_key": spec.private_key,
        "client_email": spec.client_email,
        "token_uri": spec.token_uri or DEFAULT_TOKEN_URI,
    }
    try:
        credentials: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]  # google-auth lacks hints
            info, scopes=[READ_ONLY_SCOPE]
        )
    except (ValueError, auth_errors.MalformedError) as exc:
        raise UnsupportedStorage(
            f"gcs private_key of {spec.client_email!r} is not a valid PEM private key"
        ) from exc
    return credentials


@contextlib.contextmanager
def _map_errors(where: _Where) -> Iterator[None]:
    """Translate google-api-core, google-auth and requests failures into StorageErrors."""
    at = f"at {where.endpoint}"
    try:
        yield
    except api_errors.NotFound as exc:
        if where.listing:
            raise StorageNotFound(f"bucket {where.bucket!r} not found {at}") from exc
        raise StorageNotFound(
            f"object {where.path!r} not found in bucket {where.bucket!r} {at}"
        ) from exc
    except (api_errors.Forbidden, api_errors.Unauthorized, auth_errors.RefreshError) as exc:
        raise StorageDenied(f"gcs credentials rejected for bucket {where.bucket!r} {at}") from exc
    except (
        api_errors.RetryError,
        api_errors.ServerError,
        auth_errors.TransportError,
        requests.ConnectionError,
        requests.Timeout,
    ) as exc:
        raise StorageUnreachable(f"gcs endpoint {where.endpoint} unreachable: {exc}") from exc
    except api_errors.GoogleAPICallError as exc:
        raise StorageError(
            f"gcs error for {where.path!r} in bucket {where.bucket!r} {at}: {exc}"
        ) from exc
    except OSError as exc:
        raise StorageError(f"writing {where.path!r} to local disk failed: {exc}") from exc
