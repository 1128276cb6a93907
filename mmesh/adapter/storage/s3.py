"""I/O: pull model files from any S3-compatible endpoint (AWS, MinIO, Ceph RGW, COS, moto).

boto3 is synchronous, so each pull runs in one worker thread (`asyncio.to_thread`).
A remote path names either one object or a "directory": when objects exist under
`<path>/` they are all downloaded, keeping their sub-paths below the target; otherwise
the object `<path>` itself is downloaded to the target file. An empty path pulls the
whole bucket. Addressing is path-style (what MinIO and most on-premises stores need),
connect timeouts are short and retries few, so a dead endpoint fails in seconds.
Without credentials requests go unsigned, rather than letting boto3 search the
environment or an instance metadata service that does not exist in the pod.

botocore and s3transfer exceptions are translated to the adapter's StorageError tree
in `_map_errors`, the only place that knows them.
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

import boto3
import botocore.exceptions as boto_errors
from boto3.exceptions import RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config

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

DEFAULT_REGION = "us-east-1"

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "Forbidden",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)


@dataclass(frozen=True, slots=True)
class _Where:
    """What a pull talks to, for error messages."""

    endpoint: str
    bucket: str
    path: str


class S3Provider:
    """Downloads an object, or every object under a prefix, with boto3."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 2,
        max_concurrency: int = 4,
    ) -> None:
        self._config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Checksums only where S3 requires them: several S3-compatible stores reject
            # or mangle the newer default checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._transfer = TransferConfig(
            max_concurrency=max_concurrency, num_download_attempts=max_attempts
        )

    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        return await asyncio.to_thread(self._pull, spec, remote_path, target)

    def _pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        if spec.type != StorageType.S3 or not spec.bucket:
            raise UnsupportedStorage(f"s3 provider needs an s3 spec with a bucket, got {spec!r}")
        endpoint = redact_url(spec.endpoint_url or "") or "the default AWS endpoint"
        where = _Where(endpoint, spec.bucket, remote_path)
        with _ca_bundle(spec.certificate) as verify, _map_errors(where):
            client = self._client(spec, verify)
            prefix = "" if not remote_path else remote_path.rstrip("/") + "/"
            objects = _list_objects(client, spec.bucket, prefix)
            if objects:
                self._download_tree(client, spec.bucket, objects, target)
            elif remote_path and not remote_path.endswith("/"):
                self._download(client, spec.bucket, remote_path, target)
            else:
                raise StorageNotFound(
                    f"no objects under prefix {prefix!r} in bucket {spec.bucket!r} "
                    f"at {where.endpoint}"
                )
        return target

    def _client(self, spec: StorageSpec, verify: str | None) -> Any:
        config = self._config
        if spec.access_key_id is None:
            config = config.merge(Config(signature_version=UNSIGNED))
        try:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=spec.endpoint_url,
                region_name=spec.region or DEFAULT_REGION,
                aws_access_key_id=spec.access_key_id,
                aws_secret_access_key=spec.secret_access_key,
                verify=verify,
                config=config,
            )
        except ValueError as exc:  # botocore rejects malformed endpoint URLs this way
            shown = redact_url(spec.endpoint_url or "")
            raise UnsupportedStorage(f"invalid s3 endpoint_url {shown!r}") from exc

    def _download_tree(
        self, client: Any, bucket: str, objects: list[tuple[str, PurePosixPath]], target: Path
    ) -> None:
        for key, relative in objects:
            self._download(client, bucket, key, target / relative)

    def _download(self, client: Any, bucket: str, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer writes to a temporary name and renames, so no partial file remains.
        client.download_file(bucket, key, str(dest), Config=self._transfer)


def _list_objects(client: Any, bucket: str, prefix: str) -> list[tuple[str, PurePosixPath]]:
    """Every object under `prefix` with its path below the target; folder markers skipped.

    All keys are checked before anything is written, so a key that would escape the
    target directory aborts the pull without side effects.
    """
    found: list[tuple[str, PurePosixPath]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = object_relative_path(prefix, item["Key"])
            if relative is not None:
                found.append((item["Key"], relative))
    return found


@contextlib.contextmanager
def _ca_bundle(pem: str | None) -> Iterator[str | None]:
    """The CA PEM as a file botocore can `verify` against, removed afterwards."""
    if pem is None:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="mmesh-s3-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(pem)
        yield name
    finally:
        os.unlink(name)


@contextlib.contextmanager
def _map_errors(where: _Where) -> Iterator[None]:
    """Translate botocore/s3transfer failures into the StorageError tree."""
    try:
        yield
    except boto_errors.ClientError as exc:
        raise _from_client_error(exc, where) from exc
    except (boto_errors.ConnectionError, boto_errors.HTTPClientError, RetriesExceededError) as exc:
        raise StorageUnreachable(f"s3 endpoint {where.endpoint} unreachable: {exc}") from exc
    except boto_errors.BotoCoreError as exc:
        raise StorageError(
            f"s3 pull of {where.path!r} from bucket {where.bucket!r} at {where.endpoint} "
            f"failed: {exc}"
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"writing {where.path!r} from bucket {where.bucket!r} to local disk failed: {exc}"
        ) from exc


def _from_client_error(exc: boto_errors.ClientError, where: _Where) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    at = f"at {where.endpoint}"
    if code == "NoSuchBucket":
        return StorageNotFound(f"bucket {where.bucket!r} not found {at}")
    if code in _NOT_FOUND:
        return StorageNotFound(f"object {where.path!r} not found in bucket {where.bucket!r} {at}")
    if code in _DENIED:
        return StorageDenied(f"s3 denied access ({code}) to bucket {where.bucket!r} {at}")
    if status >= 500:
        return StorageUnreachable(
            f"s3 endpoint {where.endpoint} failed with HTTP {status} ({code})"
        )
    detail = error.get("Message") or code
    return StorageError(
        f"s3 error {code} for {where.path!r} in bucket {where.bucket!r} {at}: {detail}"
    )
