"""The KVStore contract, run against MemoryKV and against a real etcd (EtcdKV).

Every test in the first part takes `store` and runs twice: once on MemoryKV,
once on EtcdKV against the session etcd under a key prefix of its own. The
second part covers what only one side has (unreachable etcd, MemoryKV's fake
clock and failure switch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mmesh.core.errors import LeaseExpired, RevisionCompacted, StoreUnavailable
from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.kv import KVStore, MemoryKV, WatchEvent
from tests.fixtures.procs import free_port

EVENT_TIMEOUT_S = 5.0


@dataclass
class Store:
    kv: KVStore
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"


def both_implement_the_port(memory: MemoryKV, etcd: EtcdKV) -> list[KVStore]:
    """Never called: mypy checks here that both classes satisfy KVStore."""
    return [memory, etcd]


@pytest.fixture
async def memory_kv() -> AsyncIterator[MemoryKV]:
    kv = MemoryKV()
    yield kv
    await kv.close()


@pytest.fixture(params=["memory", "etcd"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return Store(request.getfixturevalue("memory_kv"), "/mmtest/mem")
    handle = request.getfixturevalue("etcd_kv")
    return Store(handle.kv, handle.prefix)


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)


async def no_event_within(events: AsyncIterator[WatchEvent], seconds: float) -> bool:
    try:
        await asyncio.wait_for(anext(events), seconds)
    except TimeoutError:
        return True
    return False


# ---------------------------------------------------------------- reads and writes


async def test_put_then_get_reports_revisions_and_version(store: Store):
    key = store.key("a")
    first = await store.kv.put(key, b"v1")
    second = await store.kv.put(key, b"v2")
    assert second > first > 0
    kv = await store.kv.get(key)
    assert kv is not None
    assert (kv.key, kv.value) == (key, b"v2")
    assert kv.create_revision == first
    assert kv.mod_revision == second
    assert kv.version == 2
    assert kv.lease == 0


async def test_get_missing_key_is_none(store: Store):
    assert await store.kv.get(store.key("missing")) is None


async def test_delete_reports_whether_the_key_existed(store: Store):
    key = store.key("d")
    await store.kv.put(key, b"x")
    assert await store.kv.delete(key) is True
    assert await store.kv.get(key) is None
    assert await store.kv.delete(key) is False


async def test_put_if_zero_creates_only_when_absent(store: Store):
    key = store.key("create")
    assert await store.kv.put_if(key, b"first", mod_revision=0) is True
    assert await store.kv.put_if(key, b"second", mod_revision=0) is False
    kv = await store.kv.get(key)
    assert kv is not None
    assert kv.value == b"first"


async def test_put_if_succeeds_only_on_the_current_mod_revision(store: Store):
    key = store.key("cas")
    rev = await store.kv.put(key, b"v1")
    assert await store.kv.put_if(key, b"v2", mod_revision=rev) is True
    # the same token is stale now
    assert await store.kv.put_if(key, b"v3", mod_revision=rev) is False
    kv = await store.kv.get(key)
    assert kv is not None
    assert kv.value == b"v2"
    assert kv.mod_revision > rev
    assert await store.kv.put_if(key, b"v3", mod_revision=kv.mod_revision) is True
    # a missing key has mod revision 0, never a positive one
    assert await store.kv.put_if(store.key("nope"), b"x", mod_revision=rev) is False
    assert await store.kv.get(store.key("nope")) is None


async def test_delete_if_only_on_the_current_mod_revision(store: Store):
    key = store.key("del-cas")
    rev = await store.kv.put(key, b"v1")
    newer = await store.kv.put(key, b"v2")
    assert await store.kv.delete_if(key, mod_revision=rev) is False
    assert await store.kv.get(key) is not None
    assert await store.kv.delete_if(key, mod_revision=newer) is True
    assert await store.kv.get(key) is None
    assert await store.kv.delete_if(key, mod_revision=newer) is False


async def test_conditional_writes_check_their_arguments(store: Store):
    with pytest.raises(ValueError, match="mod_revision must be >= 1"):
        await store.kv.delete_if(store.key("k"), mod_revision=0)
    with pytest.raises(ValueError, match="mod_revision must be >= 0"):
        await store.kv.put_if(store.key("k"), b"", mod_revision=-1)


# ---------------------------------------------------------------- range reads


async def test_range_prefix_pages_through_more_keys_than_a_page(store: Store):
    names = [f"r{i:03d}" for i in range(25)]
    for name in reversed(names):
        await store.kv.put(store.key(name), name.encode())
    found, revision = await store.kv.range_prefix(store.prefix + "/", page_size=10)
    assert [kv.key for kv in found] == [store.key(n) for n in names]
    assert [kv.value for kv in found] == [n.encode() for n in names]
    assert revision >= max(kv.mod_revision for kv in found)


async def test_range_prefix_with_the_default_page_size(store: Store):
    keys = [store.key(f"bulk/{i:05d}") for i in range(1100)]
    for start in range(0, len(keys), 100):
        await asyncio.gather(*(store.kv.put(k, b"x") for k in keys[start : start + 100]))
    found, _ = await store.kv.range_prefix(store.prefix + "/bulk/")
    assert [kv.key for kv in found] == keys


async def test_range_prefix_is_one_snapshot_while_writers_run(store: Store):
    for i in range(30):
        await store.kv.put(store.key(f"s/{i:02d}"), b"old")
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await store.kv.put(store.key(f"s/{i % 30:02d}"), b"new")
            await store.kv.put(store.key(f"s/new-{i}"), b"new")
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.01)
        found, revision = await store.kv.range_prefix(store.prefix + "/s/", page_size=1)
    finally:
        stop.set()
        await task
    # nothing newer than the snapshot revision, and every write up to it is present
    assert all(kv.mod_revision <= revision for kv in found)
    now, _ = await store.kv.range_prefix(store.prefix + "/s/")
    expected = {kv.key for kv in now if kv.create_revision <= revision}
    assert {kv.key for kv in found} == expected
    assert len(found) >= 30


async def test_range_prefix_matches_the_exact_prefix(store: Store):
    await store.kv.put(store.key("p/a"), b"1")
    await store.kv.put(store.key("p/ab"), b"2")
    await store.kv.put(store.key("pa"), b"3")
    await store.kv.put(store.key("p"), b"4")
    found, _ = await store.kv.range_prefix(store.key("p/"))
    assert [kv.key for kv in found] == [store.key("p/a"), store.key("p/ab")]
    none, revision = await store.kv.range_prefix(store.key("nothing/"))
    assert none == []
    assert revision >= 1


async def test_range_prefix_reads_pages_bigger_than_grpc_default_limit(store: Store):
    # 5 values of 1 MiB: one 5 MiB page, over gRPC's default 4 MiB receive limit
    blob = b"z" * (1024 * 1024)
    for i in range(5):
        await store.kv.put(store.key(f"big/{i}"), blob)
    found, _ = await store.kv.range_prefix(store.key("big/"))
    assert [len(kv.value) for kv in found] == [len(blob)] * 5


# ---------------------------------------------------------------- watches


async def test_watch_delivers_put_then_delete_in_order(store: Store):
    key = store.key("w")
    _, revision = await store.kv.range_prefix(store.prefix + "/")
    async with contextlib.aclosing(
        store.kv.watch_prefix(store.prefix + "/", start_revision=revision + 1)
    ) as events:
        put_rev = await store.kv.put(key, b"hello")
        await store.kv.delete(key)
        put = await next_event(events)
        deleted = await next_event(events)
    assert (put.kind, put.key, put.value, put.mod_revision) == ("PUT", key, b"hello", put_rev)
    assert (deleted.kind, deleted.key, deleted.value) == ("DELETE", key, b"")
    assert deleted.mod_revision > put.mod_revision


async def test_watch_starts_at_the_start_revision_and_replays_history(store: Store):
    first = await store.kv.put(store.key("h1"), b"1")
    second = await store.kv.put(store.key("h2"), b"2")
    await store.kv.delete(store.key("h1"))
    async with contextlib.aclosing(
        store.kv.watch_prefix(store.prefix + "/", start_revision=second)
    ) as events:
        seen = [await next_event(events), await next_event(events)]
        assert await no_event_within(events, 0.2)
    assert [(e.kind, e.key) for e in seen] == [
        ("PUT", store.key("h2")),
        ("DELETE", store.key("h1")),
    ]
    assert all(e.mod_revision >= second > first for e in seen)


async def test_watch_sees_only_its_prefix(store: Store):
    _, revision = await store.kv.range_prefix(store.prefix + "/")
    async with contextlib.aclosing(
        store.kv.watch_prefix(store.key("mine/"), start_revision=revision + 1)
    ) as events:
        await store.kv.put(store.key("other/x"), b"no")
        await store.kv.put(store.key("mine"), b"no")
        await store.kv.put(store.key("mine/x"), b"yes")
        event = await next_event(events)
    assert (event.key, event.value) == (store.key("mine/x"), b"yes")


async def test_watch_from_a_compacted_revision_raises(store: Store):
    old = await store.kv.put(store.key("c"), b"1")
    latest = await store.kv.put(store.key("c"), b"2")
    await store.kv.compact(latest)
    await store.kv.compact(latest)  # compacting again is harmless
    with pytest.raises(RevisionCompacted) as info:
        async with contextlib.aclosing(
            store.kv.watch_prefix(store.prefix + "/", start_revision=old)
        ) as events:
            await next_event(events)
    assert info.value.requested == old
    assert info.value.compacted >= latest
    with pytest.raises(ValueError, match="cannot compact"):
        await store.kv.compact(latest + 1000)


async def test_close_ends_watches_and_refuses_requests(store: Store):
    _, revision = await store.kv.range_prefix(store.prefix + "/")
    events = store.kv.watch_prefix(store.prefix + "/", start_revision=revision + 1)
    await store.kv.put(store.key("x"), b"1")
    assert (await next_event(events)).key == store.key("x")
    await store.kv.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.kv.get(store.key("x"))


# ---------------------------------------------------------------- leases


async def test_lease_expiry_deletes_its_keys_and_emits_delete(store: Store):
    lease = await store.kv.grant_lease(1)
    assert lease.ttl >= 1
    key = store.key("leased")
    put_rev = await store.kv.put(key, b"alive", lease=lease)
    kv = await store.kv.get(key)
    assert kv is not None
    assert kv.lease == lease.id
    async with contextlib.aclosing(
        store.kv.watch_prefix(store.prefix + "/", start_revision=put_rev + 1)
    ) as events:
        event = await asyncio.wait_for(anext(events), lease.ttl + 4)
    assert (event.kind, event.key) == ("DELETE", key)
    assert await store.kv.get(key) is None
    with pytest.raises(LeaseExpired):
        await lease.refresh()
    with pytest.raises(LeaseExpired):
        await store.kv.put(store.key("late"), b"x", lease=lease)
    assert await store.kv.get(store.key("late")) is None


async def test_refresh_keeps_a_lease_alive_past_its_ttl(store: Store):
    lease = await store.kv.grant_lease(1)
    key = store.key("kept")
    await store.kv.put(key, b"x", lease=lease)
    loop = asyncio.get_running_loop()
    until = loop.time() + lease.ttl + 0.7  # past the ttl, and past etcd's 0.5 s expiry check
    while loop.time() < until:
        await lease.refresh()
        await asyncio.sleep(0.3)
    assert await store.kv.get(key) is not None
    await lease.revoke()


async def test_revoke_deletes_now_and_twice_is_fine(store: Store):
    lease = await store.kv.grant_lease(60)
    key_a, key_b = store.key("rv/a"), store.key("rv/b")
    await store.kv.put(key_a, b"1", lease=lease)
    rev = await store.kv.put(key_b, b"2", lease=lease)
    async with contextlib.aclosing(
        store.kv.watch_prefix(store.key("rv/"), start_revision=rev + 1)
    ) as events:
        await lease.revoke()
        gone = [await next_event(events), await next_event(events)]
    assert {(e.kind, e.key) for e in gone} == {("DELETE", key_a), ("DELETE", key_b)}
    # one lease, one revision for all of its keys
    assert gone[0].mod_revision == gone[1].mod_revision
    assert await store.kv.get(key_a) is None
    await lease.revoke()


async def test_put_without_lease_detaches_the_key(store: Store):
    lease = await store.kv.grant_lease(60)
    key = store.key("detach")
    await store.kv.put(key, b"1", lease=lease)
    await store.kv.put(key, b"2")
    await lease.revoke()
    kv = await store.kv.get(key)
    assert kv is not None
    assert (kv.value, kv.lease) == (b"2", 0)


# ---------------------------------------------------------------- EtcdKV only


async def test_unreachable_etcd_raises_store_unavailable_naming_the_endpoint():
    port = free_port()  # nothing listens here
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}") as info:
        await EtcdKV.connect(EtcdConnection.from_endpoint(f"127.0.0.1:{port}"), timeout_s=2)
    assert info.value.__cause__ is not None
    assert "UNAVAILABLE" in str(info.value)


async def test_connect_uses_the_first_endpoint_that_answers(etcd_server):
    dead = f"127.0.0.1:{free_port()}"
    conn = EtcdConnection.from_json(f'{{"endpoints": "{dead},{etcd_server.endpoint}"}}')
    kv = await EtcdKV.connect(conn, timeout_s=2)
    try:
        assert kv.endpoint == etcd_server.endpoint
        assert await kv.get("/mmtest/never-written") is None
    finally:
        await kv.close()


# ---------------------------------------------------------------- MemoryKV only


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_lease_expiry_follows_the_injected_clock():
    clock = FakeClock()
    kv = MemoryKV(clock=clock, reap_interval_s=3600)
    try:
        lease = await kv.grant_lease(10)
        await kv.put("a", b"1", lease=lease)
        await kv.put("b", b"2", lease=lease)
        rev = kv.revision
        clock.now += 9.9
        await lease.refresh()  # deadline is now +10 from here
        clock.now += 9.9
        assert await kv.get("a") is not None
        clock.now += 0.2
        assert await kv.get("a") is None  # expiry is applied before each request
        assert kv.revision == rev + 1  # both keys went in one revision
        with pytest.raises(LeaseExpired):
            await lease.refresh()
    finally:
        await kv.close()


async def test_memory_reaper_expires_without_requests():
    clock = FakeClock()
    kv = MemoryKV(clock=clock, reap_interval_s=0.01)
    try:
        lease = await kv.grant_lease(5)
        rev = await kv.put("k", b"1", lease=lease)
        async with contextlib.aclosing(kv.watch_prefix("", start_revision=rev + 1)) as events:
            clock.now += 6
            event = await next_event(events)
        assert (event.kind, event.key) == ("DELETE", "k")
    finally:
        await kv.close()


async def test_memory_unavailable_switch():
    kv = MemoryKV()
    try:
        await kv.put("k", b"1")
        kv.set_available(False)
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await kv.get("k")
        with pytest.raises(StoreUnavailable):
            await kv.put("k", b"2")
        kv.set_available(True)
        got = await kv.get("k")
        assert got is not None
        assert got.value == b"1"
    finally:
        await kv.close()


async def test_memory_history_is_bounded():
    kv = MemoryKV(max_history=10)
    try:
        first = await kv.put("k", b"0")
        for i in range(30):
            await kv.put("k", str(i).encode())
        with pytest.raises(RevisionCompacted):
            await anext(kv.watch_prefix("", start_revision=first))
        assert "keys=1" in repr(kv)
    finally:
        await kv.close()
