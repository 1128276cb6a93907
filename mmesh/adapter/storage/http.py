"""I/O: pull one model file over HTTP(S) with aiohttp.

The file is `GET <url>/<path>` (the storage `url` alone when the path is empty), sent
with the storage entry's `headers`. `certificate` replaces the trusted CAs with the
given PEM bundle; `client_certificate` + `client_key` present a client certificate
(mTLS). The body is streamed to a temporary file next to the target and renamed into
place once complete. Connection, TLS and timeout failures, and HTTP statuses, are
translated to the StorageError tree here; messages name the URL without its query.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from yarl import URL

from mmesh.adapter.errors import (
    StorageDenied,
    StorageError,
    StorageNotFound,
    StorageUnreachable,
    UnsupportedStorage,
)
from mmesh.adapter.storage.spec import StorageSpec, StorageType, redact_url

_FILE_MODE = 0o644


class HttpProvider:
    """Downloads one file with a streamed GET."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        trust_env: bool = True,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._trust_env = trust_env
        self._chunk_bytes = chunk_bytes

    async def pull(self, spec: StorageSpec, remote_path: str, target: Path) -> Path:
        if spec.type != StorageType.HTTP or not spec.url:
            raise UnsupportedStorage(f"http provider needs an http spec with a url, got {spec!r}")
        url = join_url(spec.url, remote_path)
        shown = redact_url(str(url))
        tls = await asyncio.to_thread(_ssl_context, spec)
        with _map_errors(shown):
            async with (
                aiohttp.ClientSession(timeout=self._timeout, trust_env=self._trust_env) as session,
                session.get(url, headers=list(spec.headers), ssl=tls) as response,
            ):
                _check_status(response.status, shown)
                await self._save(response, target)
        return target

    async def _save(self, response: aiohttp.ClientResponse, target: Path) -> None:
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        fd, partial = await asyncio.to_thread(
            tempfile.mkstemp, dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in response.content.iter_chunked(self._chunk_bytes):
                    await asyncio.to_thread(out.write, chunk)
                os.fchmod(out.fileno(), _FILE_MODE)  # mkstemp makes 0600; servers may run as others
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):  # already renamed or never written
                os.unlink(partial)
            raise


def join_url(base: str, path: str) -> URL:
    """`base` with `path` appended to its path, keeping its query; `base` if path is empty."""
    try:
        url = URL(base)
    except ValueError as exc:
        raise UnsupportedStorage(f"invalid http storage url {redact_url(base)!r}") from exc
    if not path.strip("/"):
        return url
    joined = url.path.rstrip("/") + "/" + path.lstrip("/")
    return url.with_path(joined).with_query(url.query)


def _check_status(status: int, shown: str) -> None:
    if 200 <= status < 300:
        return
    if status in (404, 410):
        raise StorageNotFound(f"GET {shown}: HTTP {status}, file not found")
    if status in (401, 403):
        raise StorageDenied(f"GET {shown}: HTTP {status}, access denied")
    if status >= 500:
        raise StorageUnreachable(f"GET {shown}: HTTP {status} from the server")
    raise StorageError(f"GET {shown}: unexpected HTTP {status}")


def _ssl_context(spec: StorageSpec) -> ssl.SSLContext | bool:
    """True (aiohttp's default verification) unless the spec brings its own TLS material."""
    if spec.certificate is None and spec.client_certificate is None:
        return True
    try:
        context = ssl.create_default_context(cadata=spec.certificate)
    except (ssl.SSLError, ValueError) as exc:
        raise UnsupportedStorage("http storage 'certificate' is not a valid PEM CA bundle") from exc
    if spec.client_certificate is not None and spec.client_key is not None:
        _load_client_pair(context, spec.client_certificate, spec.client_key)
    return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # ssl can only load a key pair from files: write them, owner-only, and remove them.
    with tempfile.TemporaryDirectory(prefix="mmesh-http-tls-") as tmp:
        cert_file, key_file = Path(tmp, "client.crt"), Path(tmp, "client.key")
        for path, pem in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise UnsupportedStorage(
                "http storage 'client_certificate'/'client_key' are not a valid PEM key pair"
            ) from exc


@contextlib.contextmanager
def _map_errors(shown: str) -> Iterator[None]:
    """Translate aiohttp and socket failures into the StorageError tree."""
    try:
        yield
    except aiohttp.ClientConnectorCertificateError as exc:
        raise StorageUnreachable(f"GET {shown}: server certificate not trusted: {exc}") from exc
    except aiohttp.ClientSSLError as exc:
        raise StorageUnreachable(f"GET {shown}: TLS handshake failed: {exc}") from exc
    except TimeoutError as exc:
        raise StorageUnreachable(f"GET {shown}: timed out") from exc
    except aiohttp.InvalidURL as exc:
        raise UnsupportedStorage(f"invalid http storage url {shown!r}") from exc
    except ValueError as exc:  # aiohttp refuses e.g. URL credentials plus an Authorization header
        raise UnsupportedStorage(f"GET {shown}: the request cannot be made: {exc}") from exc
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
        raise StorageUnreachable(f"GET {shown} failed: {str(exc) or type(exc).__name__}") from exc
    except OSError as exc:
        raise StorageError(f"GET {shown}: writing to local disk failed: {exc}") from exc
