"""The leader's first loads (mmesh.router.healer.FirstLoads) over a registry mirror on
MemoryKV: which models of which vmodels it places, with no request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.kv import MemoryKV
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord, VModelRecord
from mmesh.router.errors import NoCapacity
from mmesh.router.healer import FirstLoads
from mmesh.router.registry import Registry

LAYOUT = KeyLayout("", "test-mesh")
EXPIRY = 900_000


class Placer:
    def __init__(self) -> None:
        self.placed: list[str] = []

    async def __call__(self, model_id: str, record: ModelRecord) -> str:
        self.placed.append(model_id)
        return "a"


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    kv = MemoryKV()
    reg = Registry(kv, LAYOUT)
    await reg.start()
    yield reg
    await reg.stop()
    await kv.close()


async def put_model(reg: Registry, model_id: str, record: ModelRecord) -> None:
    await reg.kv.put(LAYOUT.model_key(ModelId(model_id)), record.to_json())


async def put_vmodel(reg: Registry, vmodel_id: str, active: str, target: str | None = None) -> None:
    record = VModelRecord(ModelId(active), ModelId(target or active))
    await reg.kv.put(LAYOUT.vmodel_key(VModelId(vmodel_id)), record.to_json())


async def settled(reg: Registry, loads: FirstLoads) -> None:
    """The watch delivered what was written, and every load it started has run."""
    marker = ModelId(f"marker-{len(reg.models.items)}")  # no vmodel: never loaded
    arrived = asyncio.Event()
    reg.on_change(lambda table, ident: arrived.set() if ident == marker else None)
    await reg.kv.put(LAYOUT.model_key(marker), ModelRecord(model_type="none").to_json())
    async with asyncio.timeout(2):
        await arrived.wait()
    await asyncio.gather(*loads._tasks)


def first_loads(reg: Registry, placer: Placer, *, leader: bool = True) -> FirstLoads:
    loads = FirstLoads(
        registry=reg,
        place=placer,
        is_leader=lambda: leader,
        live=lambda: {"a", "b"},
        failure_expiry_ms=EXPIRY,
    )
    reg.on_change(loads.on_change)
    return loads


async def test_a_new_vmodel_has_its_model_placed_once_by_the_leader(registry: Registry) -> None:
    placer = Placer()
    loads = first_loads(registry, placer)
    await put_model(registry, "isvc__v1", ModelRecord(model_type="stub"))
    await put_vmodel(registry, "isvc", "isvc__v1")
    await settled(registry, loads)
    assert placer.placed == ["isvc__v1"]


async def test_other_routers_leave_it_to_the_leader(registry: Registry) -> None:
    placer = Placer()
    loads = first_loads(registry, placer, leader=False)
    await put_model(registry, "isvc__v1", ModelRecord(model_type="stub"))
    await put_vmodel(registry, "isvc", "isvc__v1")
    loads.sweep()
    await settled(registry, loads)
    assert placer.placed == []


async def test_models_without_a_vmodel_copies_or_with_an_eviction_are_left_alone(
    registry: Registry,
) -> None:
    placer = Placer()
    loads = first_loads(registry, placer)
    await put_model(registry, "plain", ModelRecord(model_type="stub"))
    loaded = ModelRecord(model_type="stub", instance_ids={InstanceId("b"): 1})
    await put_model(registry, "held__v1", loaded)
    await put_vmodel(registry, "held", "held__v1")
    await put_model(registry, "idle__v1", ModelRecord(model_type="stub", last_unload_ms=5))
    await put_vmodel(registry, "idle", "idle__v1")
    loads.sweep()
    await settled(registry, loads)
    assert placer.placed == []


async def test_a_transition_target_is_loaded_only_while_the_active_model_has_no_copy(
    registry: Registry,
) -> None:
    placer = Placer()
    loads = first_loads(registry, placer)
    held = ModelRecord(model_type="stub", instance_ids={InstanceId("b"): 1})
    await put_model(registry, "up__v1", held)
    await put_model(registry, "up__v2", ModelRecord(model_type="stub"))
    await put_vmodel(registry, "up", "up__v1", "up__v2")  # the management API moves it
    await put_model(registry, "cold__v1", ModelRecord(model_type="stub", last_unload_ms=5))
    await put_model(registry, "cold__v2", ModelRecord(model_type="stub"))
    await put_vmodel(registry, "cold", "cold__v1", "cold__v2")
    loads.sweep()
    await settled(registry, loads)
    assert set(placer.placed) == {"cold__v2"}


async def test_a_model_with_no_room_waits_until_a_new_instance_comes(registry: Registry) -> None:
    class Refusing(Placer):
        async def __call__(self, model_id: str, record: ModelRecord) -> str:
            self.placed.append(model_id)
            raise NoCapacity("There are no running instances that meet the label requirements")

    placer = Refusing()
    loads = first_loads(registry, placer)
    await put_model(registry, "small__v1", ModelRecord(model_type="mt:small"))
    await put_vmodel(registry, "small", "small__v1")
    await settled(registry, loads)
    loads.sweep()
    await settled(registry, loads)
    assert placer.placed == ["small__v1"]  # the retry waits its back-off

    await registry.kv.put(LAYOUT.instance_key(InstanceId("pod-small")), InstanceRecord().to_json())
    await settled(registry, loads)
    assert placer.placed == ["small__v1", "small__v1"]
