"""I/O: EtcdKV, the KVStore port implemented on a real etcd with aetcd.

The only module that imports aetcd. `EtcdKV.connect(EtcdConnection)` opens one
gRPC channel (receive limit raised well past gRPC's 4 MiB default, short
reconnect backoff, keepalive pings), authenticates when a user is set, uses
TLS when the connection says so, and checks that the server answers before
returning. Every aetcd/gRPC failure leaves this module as a MeshError:
StoreUnavailable naming the endpoint (StoreAuthFailed, naming the user but never
the password, when etcd refuses the credentials at connect), LeaseExpired or
RevisionCompacted, each chained to its cause. Range reads are paginated at one
revision; watches reconnect from the last delivered revision. Key prefixes
(root_prefix) are records.KeyLayout's business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import aetcd
import aetcd.rpc
import aetcd.watcher
import grpc

from mmesh.core.errors import LeaseExpired, MeshError, RevisionCompacted, StoreUnavailable
from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.kv import KeyValue, Lease, StoreLease, WatchEvent, check_mod_revision

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RECEIVE_BYTES = 256 * 1024 * 1024
"""gRPC's default 4 MiB breaks one page of large records; etcd caps values at 1.5 MiB."""

_CHANNEL_OPTIONS: dict[str, int] = {
    "grpc.max_receive_message_length": MAX_RECEIVE_BYTES,
    # gRPC's default backoff grows to 120 s; come back soon after an etcd restart.
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    # Notice a dead peer on an idle watch stream. etcd rejects pings more often than 5 s.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
}

_RETRIED_ERRORS = (aetcd.ClientError, grpc.RpcError, grpc.aio.UsageError, OSError)
"""What aetcd and gRPC raise for a failed call (OSError covers timeouts)."""


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """[start, end) of every key that starts with `prefix` ("" = all keys)."""
    start = prefix.encode()
    if not start:
        return b"\0", b"\0"
    end = bytearray(start)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return start, bytes(end[: i + 1])
    return start, b"\0"  # prefix of only 0xff bytes: everything after it


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _describe(exc: BaseException) -> str:
    """One line for a gRPC or aetcd error: status code and server detail if known."""
    for cause in _causes(exc):
        if isinstance(cause, grpc.aio.AioRpcError):
            return f"{cause.code().name}: {cause.details()}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _mentions(exc: BaseException, *phrases: str) -> bool:
    text = " ".join(str(c) for c in _causes(exc)).lower()
    return any(p in text for p in phrases)


class StoreAuthFailed(StoreUnavailable):
    """etcd refused the user name and password (or has authentication turned off).

    Retrying with the same credentials cannot help; the message names the user."""


_AUTH_REJECTED = (
    "authentication failed",
    "invalid user id or password",
    "authentication is not enabled",
)


def _auth_rejected(exc: BaseException) -> bool:
    return _mentions(exc, *_AUTH_REJECTED)


def _lease_missing(exc: BaseException) -> bool:
    return _mentions(exc, "lease not found")


def _token_expired(exc: BaseException) -> bool:
    return _mentions(exc, "invalid auth token", "token expired")


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode(),
        value=bytes(raw.value),
        create_revision=raw.create_revision,
        mod_revision=raw.mod_revision,
        version=raw.version,
        lease=raw.lease,
    )


def _event(raw: Any) -> WatchEvent:
    kind: Literal["PUT", "DELETE"] = "PUT" if raw.kind == "PUT" else "DELETE"
    value = bytes(raw.kv.value) if kind == "PUT" else b""
    return WatchEvent(kind, raw.kv.key.decode(), value, raw.kv.mod_revision)


def _credentials(conn: EtcdConnection) -> grpc.ChannelCredentials | None:
    if not conn.tls:
        return None
    ca = conn.ca_certificate.encode() if conn.ca_certificate else None
    if conn.ca_certificate_file:
        try:
            ca = Path(conn.ca_certificate_file).read_bytes()
        except OSError as exc:
            raise StoreUnavailable(
                f"etcd CA certificate file {conn.ca_certificate_file}: {exc}"
            ) from exc
    key = conn.client_key.encode() if conn.client_key else None
    chain = conn.client_certificate.encode() if conn.client_certificate else None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


class _Client(aetcd.Client):  # type: ignore[misc]  # aetcd ships no type information
    """aetcd's client with a TLS channel when credentials are given.

    aetcd 1.0.0 only opens plaintext channels, so `connect` is redone here
    with the same attributes aetcd's own methods rely on (pinned version).
    """

    _is_connecting: bool
    metadata: tuple[tuple[str, str], ...] | None

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials | None, **kw: Any):
        super().__init__(*args, **kw)
        self._mm_credentials = credentials

    async def connect(self) -> None:
        if self._mm_credentials is None or self._connected.is_set():
            await super().connect()
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            target = f"{self._host}:{self._port}"
            options = list(self._options.items())
            self.channel = grpc.aio.secure_channel(target, self._mm_credentials, options=options)
            await self.authenticate()
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False

    async def authenticate(self) -> None:
        """Get a fresh token (again after it expired); no-op without a user."""
        if self._username is None:
            return
        stub = aetcd.rpc.AuthStub(self.channel)
        request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
        response = await stub.Authenticate(request, timeout=self._timeout)
        self.metadata = (("token", response.token),)
        if self._watcher is not None:
            self._watcher._metadata = self.metadata  # new watch streams use the new token


class EtcdKV:
    """KVStore on etcd v3 (implements `mmesh.core.kv.KVStore`)."""

    def __init__(
        self,
        client: _Client,
        endpoint: str,
        *,
        timeout_s: float,
        watch_retry_s: float,
    ) -> None:
        self._client = client
        self.endpoint = endpoint
        """"host:port" of the member in use, for messages."""
        self._timeout_s = timeout_s
        self._watch_retry_s = watch_retry_s
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdKV(endpoint={self.endpoint!r}, closed={self._closed})"

    @classmethod
    async def connect(
        cls,
        conn: EtcdConnection,
        *,
        timeout_s: float = 5.0,
        watch_retry_s: float = 30.0,
    ) -> EtcdKV:
        """Connect to the first endpoint that answers; StoreUnavailable if none does.

        `timeout_s` bounds every call; a broken watch keeps reconnecting for
        up to `watch_retry_s` before it raises StoreUnavailable.
        """
        if not conn.endpoints:
            raise ValueError("etcd connection has no endpoints")
        credentials = _credentials(conn)
        failures: list[StoreUnavailable] = []
        for endpoint in conn.endpoints:
            client = _Client(
                endpoint.host,
                endpoint.port,
                username=conn.username,
                password=conn.password,
                timeout=timeout_s,
                options=_CHANNEL_OPTIONS,
                credentials=credentials,
            )
            store = cls(client, str(endpoint), timeout_s=timeout_s, watch_retry_s=watch_retry_s)
            try:
                await store._probe()
            except StoreUnavailable as exc:
                await store.close()
                if conn.username is not None and _auth_rejected(exc):
                    cause = exc.__cause__ or exc
                    raise StoreAuthFailed(
                        f"etcd authentication failed for user {conn.username!r} at "
                        f"{endpoint} ({_describe(cause)})"
                    ) from cause
                failures.append(exc)
                continue
            return store
        raise StoreUnavailable("; ".join(str(f) for f in failures)) from failures[-1].__cause__

    # ------------------------------------------------------------ KVStore

    async def get(self, key: str) -> KeyValue | None:
        raw = await self._call("get " + key, lambda: self._client.get(key.encode()))
        return None if raw is None else _kv(raw)

    async def range_prefix(
        self, prefix: str, *, page_size: int = 1000
    ) -> tuple[list[KeyValue], int]:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        for _ in range(2):  # a compaction between two pages restarts the read
            try:
                return await self._range_pages(prefix, page_size)
            except RevisionCompacted:
                logger.info("etcd range %s: compacted between pages, reading again", prefix)
        return await self._range_pages(prefix, page_size)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        lease_id = 0 if lease is None else lease.id
        response = await self._call(
            "put " + key, lambda: self._client.put(key.encode(), value, lease=lease_id), lease_id
        )
        return int(response.header.revision)

    async def delete(self, key: str) -> bool:
        response = await self._call("delete " + key, lambda: self._client.delete(key.encode()))
        return response is not None

    async def put_if(
        self, key: str, value: bytes, *, mod_revision: int, lease: Lease | None = None
    ) -> bool:
        check_mod_revision(mod_revision, allow_zero=True)
        lease_id = 0 if lease is None else lease.id
        txn = self._client.transactions
        succeeded, _ = await self._call(
            "put_if " + key,
            lambda: self._client.transaction(
                compare=[txn.mod(key.encode()) == mod_revision],
                success=[txn.put(key.encode(), value, lease=lease_id)],
                failure=[],
            ),
            lease_id,
        )
        return bool(succeeded)

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        check_mod_revision(mod_revision, allow_zero=False)
        txn = self._client.transactions
        succeeded, _ = await self._call(
            "delete_if " + key,
            lambda: self._client.transaction(
                compare=[txn.mod(key.encode()) == mod_revision],
                success=[txn.delete(key.encode())],
                failure=[],
            ),
        )
        return bool(succeeded)

    async def watch_prefix(
        self, prefix: str, *, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        if start_revision < 1:
            raise ValueError(f"start_revision must be >= 1, got {start_revision}")
        next_revision = start_revision
        retry = _Retry(self._watch_retry_s)
        while not self._closed:
            try:
                async with contextlib.aclosing(self._watch_once(prefix, next_revision)) as events:
                    async for event in events:
                        retry.reset()
                        next_revision = event.mod_revision + 1
                        yield event
            except aetcd.RevisionCompactedError as exc:
                raise RevisionCompacted(next_revision, exc.compacted_revision) from exc
            except _RETRIED_ERRORS as exc:
                if self._closed:
                    return
                await self._before_rewatch(prefix, next_revision, retry, exc)

    async def _before_rewatch(
        self, prefix: str, next_revision: int, retry: _Retry, exc: BaseException
    ) -> None:
        """Wait (or give up) before watching again after the stream broke."""
        delay = retry.next_delay()
        if delay is None:
            self._unavailable(f"watch {prefix}", exc)
        logger.warning(
            "etcd watch on %s at %s broke (%s); watching again from revision %s",
            prefix,
            self.endpoint,
            _describe(exc),
            next_revision,
        )
        await asyncio.sleep(delay)
        if _token_expired(exc):
            with contextlib.suppress(*_RETRIED_ERRORS):  # the next watch attempt reports it
                await self._client.authenticate()

    async def grant_lease(self, ttl_s: int) -> Lease:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        raw = await self._call("grant lease", lambda: self._client.lease(ttl_s))
        return StoreLease(self, int(raw.id), int(raw.ttl))

    async def compact(self, revision: int) -> None:
        try:
            await self._call(f"compact {revision}", lambda: self._client.compact(revision))
        except StoreUnavailable as exc:
            if _mentions(exc, "future revision"):
                raise ValueError(f"cannot compact revision {revision}: beyond the store") from exc
            if not _mentions(exc, "has been compacted"):
                raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.close()

    # ------------------------------------------------------------ leases

    async def refresh_lease(self, lease_id: int) -> None:
        """Keep a lease alive once (StoreLease.refresh)."""
        reply = await self._call(
            f"refresh lease {lease_id:x}", lambda: self._client.refresh_lease(lease_id), lease_id
        )
        if reply is None or reply.TTL <= 0:  # etcd answers TTL 0 for an unknown lease
            raise LeaseExpired(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease (StoreLease.revoke); one already gone is fine."""
        try:
            await self._call(
                f"revoke lease {lease_id:x}", lambda: self._client.revoke_lease(lease_id), lease_id
            )
        except LeaseExpired:
            return

    # ------------------------------------------------------------ auth administration

    async def auth_call(self, what: str, method: str, request: Any, *, token: bool = True) -> Any:
        """One `etcdserverpb.Auth` call (e.g. "UserGet") on this connection, with its
        token unless `token` is False (Authenticate); failures become StoreUnavailable like
        every other call (mmesh.core.etcd_admin). `what` must not contain a password."""

        async def call() -> Any:
            await self._client.connect()
            stub = aetcd.rpc.AuthStub(self._client.channel)
            metadata = self._client.metadata if token else None
            return await getattr(stub, method)(request, timeout=self._timeout_s, metadata=metadata)

        return await self._call(what, call)

    # ------------------------------------------------------------ internals

    async def _probe(self) -> None:
        """One cheap round trip, so connect() fails fast on a bad endpoint."""
        await self._call("connect", self._client.connect)
        await self._call(
            "status",
            lambda: self._client.maintenancestub.Status(
                aetcd.rpc.StatusRequest(), timeout=self._timeout_s, metadata=self._client.metadata
            ),
        )

    async def _range_pages(self, prefix: str, page_size: int) -> tuple[list[KeyValue], int]:
        start, end = _prefix_range(prefix)
        found: list[KeyValue] = []
        revision = 0  # 0 = current for the first page; then pinned to its revision
        while True:
            response = await self._range_page(prefix, start, end, page_size, revision)
            revision = revision or int(response.header.revision)
            found.extend(_kv(raw) for raw in response.kvs)
            if not response.more or not response.kvs:
                return found, revision
            start = response.kvs[-1].key + b"\0"

    async def _range_page(
        self, prefix: str, start: bytes, end: bytes, limit: int, revision: int
    ) -> Any:
        request = aetcd.rpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)

        async def call() -> Any:
            await self._client.connect()
            return await self._client.kvstub.Range(
                request, timeout=self._timeout_s, metadata=self._client.metadata
            )

        try:
            return await self._call("range " + prefix, call)
        except StoreUnavailable as exc:
            if revision and _mentions(exc, "has been compacted"):
                raise RevisionCompacted(revision, revision) from exc
            raise

    async def _watch_once(
        self, prefix: str, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        start, end = _prefix_range(prefix)
        watch = await self._client.watch(start, range_end=end, start_revision=start_revision)
        try:
            async for raw in watch:
                yield _event(raw)
        finally:
            if not self._closed:  # a closed client has already dropped its watches
                await watch.cancel()

    async def _call(self, what: str, thunk: Callable[[], Awaitable[T]], lease_id: int = 0) -> T:
        """Run one request; translate failures; re-login once if the token expired."""
        if self._closed:
            raise StoreUnavailable(f"etcd {self.endpoint}: {what}: the store is closed")
        try:
            return await thunk()
        except _RETRIED_ERRORS as exc:
            if lease_id and _lease_missing(exc):
                raise LeaseExpired(lease_id) from exc
            if not _token_expired(exc):
                self._unavailable(what, exc)
            first = exc
        logger.info("etcd auth token at %s expired; logging in again", self.endpoint)
        try:
            await self._client.authenticate()
            return await thunk()
        except _RETRIED_ERRORS as exc:
            raise self._unavailable_error(what, exc) from first

    def _unavailable_error(self, what: str, exc: BaseException) -> MeshError:
        return StoreUnavailable(f"etcd at {self.endpoint} failed on {what}: {_describe(exc)}")

    def _unavailable(self, what: str, exc: BaseException) -> NoReturn:
        raise self._unavailable_error(what, exc) from exc


class _Retry:
    """Backoff for watch reconnects within a time budget that progress resets."""

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._deadline: float | None = None
        self._delay = 0.1

    def reset(self) -> None:
        self._deadline = None
        self._delay = 0.1

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt; None once the budget is spent."""
        now = asyncio.get_running_loop().time()
        if self._deadline is None:
            self._deadline = now + self._budget_s
        if now >= self._deadline:
            return None
        delay = min(self._delay, self._deadline - now)
        self._delay = min(self._delay * 2, 2.0)
        return delay
