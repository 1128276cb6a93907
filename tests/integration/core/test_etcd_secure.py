"""EtcdKV on an etcd that serves TLS only and requires a user and password (the
`etcd_connection` secret with `userid`, `password` and a CA `certificate`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV, StoreAuthFailed
from mmesh.core.etcd_config import EtcdConnection, from_json, from_mapping
from mmesh.core.kv import WatchEvent
from tests.fixtures.etcd import SecureEtcd


@pytest.fixture
async def kv(secure_etcd: SecureEtcd) -> AsyncIterator[tuple[EtcdKV, str]]:
    store = await EtcdKV.connect(from_json(json.dumps(secure_etcd.secret())), timeout_s=5)
    try:
        yield store, f"/secure/{uuid.uuid4().hex[:10]}"
    finally:
        await store.close()


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), timeout=10)


async def test_put_get_range_and_conditional_writes(kv: tuple[EtcdKV, str]) -> None:
    store, prefix = kv
    revision = await store.put(f"{prefix}/a", b"1")
    await store.put(f"{prefix}/b", b"2")
    got = await store.get(f"{prefix}/a")
    assert got is not None
    assert (got.value, got.mod_revision) == (b"1", revision)
    found, _ = await store.range_prefix(prefix + "/")
    assert [(k.key, k.value) for k in found] == [(f"{prefix}/a", b"1"), (f"{prefix}/b", b"2")]
    assert await store.put_if(f"{prefix}/a", b"3", mod_revision=revision)
    assert not await store.put_if(f"{prefix}/a", b"4", mod_revision=revision)
    assert await store.delete(f"{prefix}/b")


async def test_watch_and_lease(kv: tuple[EtcdKV, str]) -> None:
    store, prefix = kv
    _, revision = await store.range_prefix(prefix + "/")
    events = store.watch_prefix(prefix + "/", start_revision=revision + 1)
    try:
        lease = await store.grant_lease(5)
        await lease.refresh()
        await store.put(f"{prefix}/leased", b"alive", lease=lease)
        put = await next_event(events)
        assert (put.kind, put.key, put.value) == ("PUT", f"{prefix}/leased", b"alive")
        await lease.revoke()
        gone = await next_event(events)
        assert (gone.kind, gone.key) == ("DELETE", f"{prefix}/leased")
    finally:
        await events.aclose()


async def test_wrong_password_names_the_user_not_the_password(secure_etcd: SecureEtcd) -> None:
    wrong = "n0t-the-Passw0rd"
    conn = from_mapping(secure_etcd.secret(password=wrong))
    assert wrong not in repr(conn)
    with pytest.raises(StoreAuthFailed) as caught:
        await EtcdKV.connect(conn, timeout_s=5)
    message = str(caught.value)
    assert message.startswith("etcd authentication failed for user 'root' at 127.0.0.1:")
    assert "invalid user ID or password" in message
    assert wrong not in message
    assert secure_etcd.password not in message
    assert isinstance(caught.value, StoreUnavailable)


async def test_unknown_user_is_an_authentication_failure(secure_etcd: SecureEtcd) -> None:
    with pytest.raises(StoreAuthFailed, match="for user 'nobody'"):
        await EtcdKV.connect(from_mapping(secure_etcd.secret(userid="nobody")), timeout_s=5)


async def test_tls_is_required_and_verified(secure_etcd: SecureEtcd) -> None:
    endpoint = secure_etcd.server.endpoint
    plain = EtcdConnection.from_endpoint(endpoint)
    with pytest.raises(StoreUnavailable, match=endpoint):
        await EtcdKV.connect(plain, timeout_s=3)
    # https, but trusting the system CAs instead of the etcd's own CA
    untrusted = {k: v for k, v in secure_etcd.secret().items() if k != "certificate"}
    with pytest.raises(StoreUnavailable, match=endpoint):
        await EtcdKV.connect(from_mapping(untrusted), timeout_s=3)


async def test_without_credentials_requests_are_refused(secure_etcd: SecureEtcd) -> None:
    anonymous = {"endpoints": secure_etcd.url, "certificate": secure_etcd.ca_pem}
    store = await EtcdKV.connect(from_mapping(anonymous), timeout_s=5)
    try:
        with pytest.raises(StoreUnavailable, match="user name is empty"):
            await store.get("/secure/anything")
    finally:
        await store.close()
