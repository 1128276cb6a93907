"""Scale-down of a local copy (LocalModels.retire) on MemoryKV + Registry with a fake
runtime: the copy leaves the registry first, running requests finish, then it unloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.kv import MemoryKV
from mmesh.core.records import KeyLayout, ModelRecord
from mmesh.router.cache import EvictionPolicy, LocalCache
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo

LAYOUT = KeyLayout("", "test-mesh")
HERE, PEER = InstanceId("here"), InstanceId("peer")


class FakeRuntime:
    """Records unloads; nothing else is called by a retire."""

    def __init__(self) -> None:
        self.unloaded: list[str] = []

    async def unload(self, model_id: str, *, timeout_s: float) -> None:
        self.unloaded.append(model_id)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    kv = MemoryKV()
    reg = Registry(kv, LAYOUT)
    await reg.start()
    yield reg
    await reg.stop()
    await kv.close()


async def setup(
    registry: Registry, *, min_copies: int = 0, unloaded_ago_ms: int | None = None
) -> tuple[LocalModels, FakeRuntime]:
    runtime = FakeRuntime()
    info = RuntimeInfo(100, 1, 1000, 1, "1", {}, False)
    local = LocalModels(
        instance_id=HERE,
        cache=LocalCache(100),
        runtime=cast(RuntimeClient, runtime),
        info=info,
        registry=registry,
        metrics=RouterMetrics(),
        policy=EvictionPolicy(min_churn_age_ms=0),
        failure_expiry_ms=900_000,
        is_live=lambda iid: True,
        on_change=lambda: None,
    )
    last_unload_ms = 0 if unloaded_ago_ms is None else now_ms() - unloaded_ago_ms
    record = ModelRecord("stub", min_copies=min_copies, last_unload_ms=last_unload_ms)
    for iid in (HERE, PEER):
        record = record.with_copy_loaded(iid, now_ms() - 60_000)
    await registry.update_model("m", lambda _: record)
    stamp = now_ms()
    local.cache.admit(ModelId("m"), 10, last_used_ms=stamp, now_ms=stamp, policy=local.policy)
    local.cache.loaded(ModelId("m"), 10, stamp)
    return local, runtime


def holders(registry: Registry) -> set[str]:
    record = registry.models.get("m")
    assert record is not None
    return set(record.instance_ids)


async def test_the_registry_lets_go_first_and_the_unload_waits_for_running_requests(
    registry: Registry,
) -> None:
    local, runtime = await setup(registry)
    with local.in_use("m"):  # a request is being served by this copy
        assert await local.retire("m", keep=0, gap_ms=80_000, drain_s=30)
        assert holders(registry) == {PEER}  # new requests go to the peer's copy
        record = registry.models.get("m")
        assert record is not None and now_ms() - record.last_unload_ms < 5000
        assert not local.is_loaded("m") and local.is_unloading("m")
        await asyncio.sleep(0.2)
        assert runtime.unloaded == []  # the runtime still has it for the running request
    await local.drain()
    assert runtime.unloaded == ["m"]
    assert local.cache.get(ModelId("m")) is None


async def test_a_request_that_never_ends_delays_the_unload_only_by_the_drain_limit(
    registry: Registry,
) -> None:
    local, runtime = await setup(registry)
    with local.in_use("m"):
        assert await local.retire("m", keep=0, gap_ms=0, drain_s=0.1)
        await asyncio.wait_for(local.drain(), timeout=5)
        assert runtime.unloaded == ["m"]


@pytest.mark.parametrize(
    ("setup_args", "retire_args", "peer_live"),
    [
        ({}, {}, False),  # the other copy's pod is gone: this is the last live copy
        ({"min_copies": 2}, {"keep": 2}, True),  # one of the model's minimum copies
        ({"unloaded_ago_ms": 1000}, {}, True),  # another copy went a moment ago
    ],
    ids=["last live copy", "minimum copy", "within the unload gap"],
)
async def test_the_registry_check_refuses_and_nothing_changes(
    registry: Registry, setup_args: dict[str, Any], retire_args: dict[str, Any], peer_live: bool
) -> None:
    local, runtime = await setup(registry, **setup_args)
    local.is_live = lambda iid: iid == HERE or peer_live
    args: dict[str, Any] = {"keep": 0, "gap_ms": 80_000, "drain_s": 1, **retire_args}
    assert not await local.retire("m", **args)
    assert holders(registry) == {HERE, PEER}
    assert local.is_loaded("m")
    await local.drain()
    assert runtime.unloaded == []


async def test_at_shutdown_every_claim_leaves_the_registry_before_the_runtime_unloads(
    registry: Registry,
) -> None:
    """The runtime stops beside the router: while unloads are retried, peers must already
    be sending requests elsewhere."""
    local, runtime = await setup(registry)
    seen_at_unload: list[set[str]] = []

    async def unload(model_id: str, *, timeout_s: float) -> None:
        seen_at_unload.append(holders(registry))
        runtime.unloaded.append(model_id)

    runtime.unload = unload  # type: ignore[method-assign]
    await local.unload_all()
    assert runtime.unloaded == ["m"]
    assert seen_at_unload == [{PEER}]
    assert holders(registry) == {PEER}
