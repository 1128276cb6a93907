"""Leader election on a lease-bound key (MemoryKV with a fake clock; no sleeping)."""

from __future__ import annotations

import os

import pytest

from mmesh.core.kv import MemoryKV
from mmesh.operator.leadership import LEASE_TTL_S, Leadership, default_identity, leader_key
from mmesh.operator.settings import OperatorSettings


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


async def test_a_restarted_leader_of_the_same_pod_leads_at_once(
    store: tuple[MemoryKV, FakeClock],
) -> None:
    """A killed leader's container restarts with the same identity (POD_NAME): it must not
    wait out its old lease, while another pod still has to."""
    kv, _ = store
    key = leader_key("/r")
    assert await Leadership(kv, key, "pod-a").try_acquire()  # then SIGKILLed: no release
    other = Leadership(kv, key, "pod-b")
    assert not await other.try_acquire()
    again = Leadership(kv, key, "pod-a")
    assert await again.try_acquire() and again.is_leader
    found = await kv.get(key)
    assert found is not None and found.value == b"pod-a"
    assert not await other.try_acquire()


def test_identity_is_the_pod_name_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "mmesh-operator-5d9c-abcde")
    settings = OperatorSettings(ETCD_CONNECTION="{}")
    assert default_identity(settings.pod_name) == "mmesh-operator-5d9c-abcde"
    monkeypatch.delenv("POD_NAME")
    settings = OperatorSettings(ETCD_CONNECTION="{}")
    assert default_identity(settings.pod_name).endswith(f"-{os.getpid()}")


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
