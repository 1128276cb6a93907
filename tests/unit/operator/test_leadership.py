"""Leader election on a lease-bound key (MemoryKV with a fake clock; no sleeping)."""

from __future__ import annotations

import pytest

from mmesh.core.kv import MemoryKV
from mmesh.operator.leadership import LEASE_TTL_S, Leadership, leader_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> tuple[MemoryKV, FakeClock]:
    clock = FakeClock()
    return MemoryKV(clock=clock, reap_interval_s=3600), clock


def test_leader_key_sits_under_the_root_prefix() -> None:
    assert leader_key("/root/") == "/root/mm-operator/leader"
    assert leader_key("") == "/mm-operator/leader"


async def test_one_leader_and_a_takeover_when_its_lease_expires(
    store: tuple[MemoryKV, FakeClock],
) -> None:
    kv, clock = store
    key = leader_key("/r")
    a, b = Leadership(kv, key, "a"), Leadership(kv, key, "b")
    assert await a.try_acquire() and a.is_leader
    assert not await b.try_acquire() and not b.is_leader
    found = await kv.get(key)
    assert found is not None and found.value == b"a"

    clock.now += LEASE_TTL_S + 1  # a died: nobody refreshed its lease
    kv.expire_due()
    assert await b.try_acquire() and b.is_leader
    found = await kv.get(key)
    assert found is not None and found.value == b"b"


async def test_a_leader_that_cannot_renew_steps_down(store: tuple[MemoryKV, FakeClock]) -> None:
    kv, _ = store
    a = Leadership(kv, leader_key("/r"), "a")
    assert await a.try_acquire()
    lease = a._lease
    assert lease is not None
    await lease.revoke()  # e.g. expired while the leader was paused
    await a._renew(lease)
    assert not a.is_leader


async def test_etcd_down_is_no_leadership_and_release_frees_the_key(
    store: tuple[MemoryKV, FakeClock],
) -> None:
    kv, _ = store
    key = leader_key("/r")
    a, b = Leadership(kv, key, "a"), Leadership(kv, key, "b")
    kv.set_available(False)
    assert not await a.try_acquire()
    kv.set_available(True)
    assert await a.try_acquire()
    await a.release()
    assert not a.is_leader and await kv.get(key) is None
    assert await b.try_acquire()
