"""Loads while etcd is away (LocalModels on MemoryKV + Registry, a fake runtime): a model
no live peer holds loads unrecorded and is recorded once etcd answers; the mirrored record
still refuses a second copy that another live instance already holds."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId
from mmesh.core.kv import MemoryKV
from mmesh.core.records import KeyLayout, ModelRecord
from mmesh.router import loading
from mmesh.router.cache import EvictionPolicy, LocalCache
from mmesh.router.errors import ModelNotHere
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo

LAYOUT = KeyLayout("", "test-mesh")  # the shared `registry` fixture's
HERE, PEER = InstanceId("here"), InstanceId("peer")
SIZE = 64 * 1024


class FakeRuntime:
    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.unloaded: list[str] = []

    async def predict_size(self, model_id: str, *_: str) -> int:
        return SIZE

    async def load(self, model_id: str, *_: str, timeout_s: float) -> int:
        self.loaded.append(model_id)
        return SIZE

    async def unload(self, model_id: str, *, timeout_s: float) -> None:
        self.unloaded.append(model_id)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "RECORD_RETRY_S", 0.02)


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
        is_live=lambda iid: True,
        on_change=lambda: None,
    )


async def registered(registry: Registry, record: ModelRecord | None = None) -> ModelRecord:
    await registry.update_model("m", lambda _: record or ModelRecord("stub"))
    found = registry.models.get("m")
    assert found is not None
    return found


async def stored(kv: MemoryKV) -> ModelRecord:
    found = await kv.get(LAYOUT.model_key("m"))  # type: ignore[arg-type]
    assert found is not None
    return ModelRecord.from_json(found.value)


async def loaded_while_away(kv: MemoryKV, registry: Registry) -> tuple[LocalModels, FakeRuntime]:
    """Model "m", registered with no copy, loaded here after etcd went away."""
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    record = await registered(registry)
    kv.set_available(False)
    await local.ensure_loaded("m", record)
    return local, runtime


async def test_a_model_loads_while_etcd_is_away_and_is_recorded_once_it_answers(
    kv: MemoryKV, registry: Registry
) -> None:
    local, runtime = await loaded_while_away(kv, registry)

    assert local.is_loaded("m") and runtime.loaded == ["m"]
    recorded = asyncio.Event()
    registry.on_change(lambda table, ident: ident == "m" and recorded.set())
    kv.set_available(True)
    async with asyncio.timeout(2):
        await recorded.wait()
    assert HERE in (await stored(kv)).loaded_in


async def test_while_etcd_is_away_a_copy_on_a_live_peer_still_refuses_a_second_one(
    kv: MemoryKV, registry: Registry
) -> None:
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    record = await registered(registry, ModelRecord("stub").with_copy_loaded(PEER, now_ms()))
    kv.set_available(False)

    with pytest.raises(ModelNotHere, match="already has a copy on peer"):
        await local.ensure_loaded("m", record)

    assert runtime.loaded == [] and not local.is_loaded("m")


async def test_a_copy_gone_before_etcd_returns_is_never_recorded(
    kv: MemoryKV, registry: Registry
) -> None:
    local, runtime = await loaded_while_away(kv, registry)

    local.evict("m")
    await asyncio.sleep(0.1)  # a few retry rounds, all refused
    kv.set_available(True)
    await asyncio.sleep(0.1)

    assert HERE not in (await stored(kv)).instance_ids
    assert runtime.unloaded == ["m"]
