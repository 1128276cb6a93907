"""A cold instance warms its model server with one load of its own (mmesh.router.warmup's
choice, mmesh.router.warming's shell on LocalModels over MemoryKV + Registry and a fake
runtime), and never stays cold: nothing to load, or loads that do not happen, make it warm."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router.cache import EvictionPolicy, LocalCache
from mmesh.router.errors import LoadFailed, RuntimeUnavailable
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo
from mmesh.router.warming import Warmer
from mmesh.router.warmup import RECENT_MS, worth_warming

HERE, PEER = "here", "peer"
SIZE = 64 * 1024
NOW = 1_700_000_000_000
LABELS = ("mt:stub", "rt:stub")


class FakeRuntime:
    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.loaded: list[str] = []
        self.fail = fail or {}
        self.release = asyncio.Event()
        self.release.set()

    async def predict_size(self, model_id: str, *_: str) -> int:
        return SIZE

    async def load(self, model_id: str, *_: str, timeout_s: float) -> int:
        await self.release.wait()
        if model_id in self.fail:
            raise self.fail[model_id]
        self.loaded.append(model_id)
        return SIZE

    async def unload(self, model_id: str, *, timeout_s: float) -> None:
        pass


def local_models(registry: Registry, runtime: FakeRuntime) -> LocalModels:
    return LocalModels(
        instance_id=HERE,
        cache=LocalCache(1000),
        runtime=cast(RuntimeClient, runtime),
        info=RuntimeInfo(8 * 1024 * 1000, 1, 1000, SIZE, "1", {}, False),
        registry=registry,
        metrics=RouterMetrics(),
        policy=EvictionPolicy(min_churn_age_ms=0),
        failure_expiry_ms=900_000,
        is_live=lambda iid: iid in (HERE, PEER),
        on_change=lambda: None,
    )


async def register(registry: Registry, model_id: str, record: ModelRecord) -> None:
    await registry.update_model(model_id, lambda _: record)


def used(ago_ms: int, **kwargs: object) -> ModelRecord:
    return ModelRecord("stub", last_used_ms=now_ms() - ago_ms, **kwargs)  # type: ignore[arg-type]


async def warm_up(
    registry: Registry, runtime: FakeRuntime, lost: tuple[str, ...] = ()
) -> LocalModels:
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, live=lambda: {HERE, PEER}, labels=LABELS)
    warmer.begin(lost)
    assert local.cold
    async with asyncio.timeout(5):
        await warmer.wait()
    assert not local.cold
    return local


async def test_a_cold_instance_loads_the_most_recently_used_model_nobody_holds(
    registry: Registry,
) -> None:
    await register(registry, "older", used(60_000))
    await register(registry, "held", used(1_000).with_copy_loaded(InstanceId(PEER), now_ms()))
    await register(registry, "newest", used(5_000))
    runtime = FakeRuntime()

    local = await warm_up(registry, runtime)

    assert runtime.loaded == ["newest"] and local.is_loaded("newest")


async def test_a_copy_it_lost_comes_first_though_the_registry_never_saw_it_used(
    registry: Registry,
) -> None:
    """The registry learns a last use when a copy unloads: one lost in a crash looks unused."""
    await register(registry, "recent", used(1_000))
    await register(registry, "taken", ModelRecord("stub").with_copy_loaded(InstanceId(PEER), 1))
    await register(registry, "crashed", ModelRecord("stub"))
    runtime = FakeRuntime()

    await warm_up(registry, runtime, lost=("taken", "crashed"))

    assert runtime.loaded == ["crashed"]  # "taken": a live peer holds it now


async def test_the_instance_stays_cold_until_the_warm_up_load_ends(registry: Registry) -> None:
    await register(registry, "m", used(1_000))
    runtime = FakeRuntime()
    runtime.release.clear()
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, live=lambda: {HERE}, labels=LABELS)
    warmer.begin()
    await asyncio.sleep(0.1)
    assert local.cold and local.loading_count() == 1

    runtime.release.set()
    async with asyncio.timeout(5):
        await warmer.wait()
    assert not local.cold and local.is_loaded("m")


async def test_with_nothing_worth_loading_the_instance_is_warm_at_once(
    registry: Registry,
) -> None:
    await register(registry, "never-used", ModelRecord("stub"))
    await register(registry, "long-ago", used(RECENT_MS + 60_000))
    runtime = FakeRuntime()

    await warm_up(registry, runtime)

    assert runtime.loaded == []


async def test_a_warm_up_that_cannot_happen_leaves_the_instance_warm_all_the_same(
    registry: Registry,
) -> None:
    await register(registry, "a", used(1_000))
    await register(registry, "b", used(2_000))
    unreachable = RuntimeUnavailable("model server at 127.0.0.1:1 is unavailable")
    runtime = FakeRuntime(fail={"a": unreachable, "b": unreachable})

    local = await warm_up(registry, runtime)

    assert runtime.loaded == [] and local.cache.count == 0


async def test_a_model_that_fails_to_load_ends_the_cold_start(registry: Registry) -> None:
    await register(registry, "broken", used(1_000))
    runtime = FakeRuntime(fail={"broken": LoadFailed("corrupt model file")})
    local = local_models(registry, runtime)
    local.cold = True

    with pytest.raises(LoadFailed):
        await local.ensure_loaded("broken", used(1_000))

    assert not local.cold  # the model server judged it: its first load is behind it


async def test_a_load_the_runtime_never_saw_leaves_the_instance_cold(registry: Registry) -> None:
    await register(registry, "m", used(1_000))
    runtime = FakeRuntime(fail={"m": RuntimeUnavailable("connection refused")})
    local = local_models(registry, runtime)
    local.cold = True

    with pytest.raises(RuntimeUnavailable):
        await local.ensure_loaded("m", used(1_000))

    assert local.cold


async def test_copies_the_runtime_kept_mean_it_is_warm(registry: Registry) -> None:
    await register(registry, "kept", used(1_000))
    await register(registry, "other", used(500))
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    assert local.adopt("kept", SIZE)
    warmer = Warmer(local=local, registry=registry, live=lambda: {HERE}, labels=LABELS)

    warmer.begin()
    await asyncio.sleep(0.1)

    assert not local.cold and runtime.loaded == []
    await warmer.stop()


# ---------------------------------------------------------------- the choice (pure)


@pytest.mark.parametrize(
    ("record", "worth"),
    [
        (ModelRecord("stub", last_used_ms=NOW - 1_000), True),
        (ModelRecord("stub"), False),
        (ModelRecord("stub", last_used_ms=NOW - RECENT_MS - 1), False),
        (ModelRecord("stub", last_used_ms=NOW - 1).with_copy_loaded(InstanceId(PEER), NOW), False),
        (ModelRecord("stub", last_used_ms=NOW - 1).with_copy_loaded(InstanceId("gone"), NOW), True),
        (
            ModelRecord("stub", last_used_ms=NOW - 1).with_copy_failed(InstanceId(HERE), "x", NOW),
            False,
        ),
        (ModelRecord("mt:onnx", last_used_ms=NOW - 1), False),
    ],
    ids=[
        "used lately, held nowhere",
        "never used",
        "used over an hour ago",
        "a live peer holds it",
        "only a departed instance held it",
        "it failed to load here",
        "another runtime's model type",
    ],
)
def test_worth_warming(record: ModelRecord, worth: bool) -> None:
    live = {HERE, PEER}
    since = NOW - RECENT_MS
    assert worth_warming(record, me=HERE, live=live, labels=LABELS, since_ms=since) is worth
