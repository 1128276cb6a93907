"""The router's etcd mirror (mmesh.router.registry) against MemoryKV.

Other routers are simulated by writing straight to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, Callable

import pytest

from mmesh.core.errors import StoreUnavailable
from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.kv import MemoryKV, WatchEvent
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord, Table, VModelRecord
from mmesh.router import registry as registry_module
from mmesh.router.registry import CAS_ATTEMPTS, UNCHANGED, Registry, Unchanged

LAYOUT = KeyLayout("", "test-mesh")
A, B = InstanceId("inst-a"), InstanceId("inst-b")
T0 = 1_700_000_000_000


def model(model_type: str = "sklearn", **kwargs) -> ModelRecord:
    return ModelRecord(model_type=model_type, **kwargs)


def model_key(model_id: str) -> str:
    return LAYOUT.model_key(ModelId(model_id))


def vmodel_key(vmodel_id: str) -> str:
    return LAYOUT.vmodel_key(VModelId(vmodel_id))


async def stored_model(kv: MemoryKV, model_id: str) -> ModelRecord | None:
    found = await kv.get(model_key(model_id))
    return None if found is None else ModelRecord.from_json(found.value)


async def eventually(registry: Registry, check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds, re-checking after each change the registry applies."""
    changed = asyncio.Event()
    registry.on_change(lambda table, ident: changed.set())
    try:
        async with asyncio.timeout(2):
            while not check():
                await changed.wait()
                changed.clear()
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


class Changes:
    """A registry listener that records every (table, id) it is told about."""

    def __init__(self) -> None:
        self.seen: list[tuple[Table, str]] = []

    def __call__(self, table: Table, ident: str) -> None:
        self.seen.append((table, ident))


@pytest.fixture
def changes(registry: Registry) -> Changes:
    listener = Changes()
    registry.on_change(listener)
    return listener


async def caught_up(kv: MemoryKV, registry: Registry) -> None:
    """Wait until the watch has delivered everything written so far (events are in order,
    so a marker written now arriving means everything before it has been applied)."""
    marker = InstanceId(f"marker-{kv.revision}")
    await kv.put(LAYOUT.instance_key(marker), InstanceRecord().to_json())
    await eventually(
        registry, lambda: registry.instances.get(marker) is not None, "the watch caught up"
    )


# ---------------------------------------------------------------- start-up


async def test_start_mirrors_every_table(kv: MemoryKV):
    await kv.put(model_key("m1"), model(model_path="s3://m1").to_json())
    await kv.put(vmodel_key("v1"), VModelRecord(ModelId("m1"), ModelId("m1")).to_json())
    await kv.put(LAYOUT.instance_key(A), InstanceRecord(capacity_units=10).to_json())
    reg = Registry(kv, LAYOUT)
    await reg.start()
    try:
        assert reg.synced.is_set()
        assert reg.models.get("m1") == model(model_path="s3://m1")
        assert reg.vmodels.get("v1") == VModelRecord(ModelId("m1"), ModelId("m1"))
        assert reg.instances.get(A) == InstanceRecord(capacity_units=10)
    finally:
        await reg.stop()


async def test_start_ignores_keys_of_other_services_and_bad_values(kv: MemoryKV):
    other = KeyLayout("", "other-mesh")
    await kv.put(other.model_key(ModelId("m1")), model().to_json())
    await kv.put(model_key("broken"), b"{not json")
    await kv.put(model_key("good"), model().to_json())
    reg = Registry(kv, LAYOUT)
    await reg.start()
    try:
        assert reg.models.get("m1") is None
        assert reg.models.get("broken") is None
        assert reg.models.get("good") == model()
    finally:
        await reg.stop()


async def test_start_ignores_the_leader_key(kv: MemoryKV):
    # KeyLayout.leader_key lives under the same prefix but is no table of the mirror
    await kv.put(LAYOUT.leader_key, b"router-1")
    await kv.put(model_key("m1"), model().to_json())
    reg = Registry(kv, LAYOUT)
    await reg.start()
    try:
        assert reg.models.get("m1") == model()
    finally:
        await reg.stop()


async def test_watch_keeps_following_after_a_leader_key_is_written(
    kv: MemoryKV, registry: Registry
):
    await kv.put(LAYOUT.leader_key, b"router-1")
    await kv.put(model_key("m1"), model().to_json())

    await eventually(registry, lambda: registry.models.get("m1") is not None, "m1 is mirrored")


# ---------------------------------------------------------------- watch-fed updates


async def test_watch_applies_another_routers_writes(
    kv: MemoryKV, registry: Registry, changes: Changes
):
    await kv.put(model_key("m1"), model().to_json())
    await eventually(registry, lambda: registry.models.get("m1") is not None, "m1 is mirrored")

    await kv.put(model_key("m1"), model().with_copy_loaded(A, T0).to_json())
    await eventually(
        registry,
        lambda: A in (registry.models.get("m1") or model()).loaded_in,
        "m1's copy is mirrored",
    )

    assert changes.seen == [(Table.REGISTRY, "m1"), (Table.REGISTRY, "m1")]


async def test_watch_propagates_deletion(kv: MemoryKV, registry: Registry, changes: Changes):
    await kv.put(vmodel_key("v1"), VModelRecord(ModelId("m1"), ModelId("m1")).to_json())
    await eventually(registry, lambda: registry.vmodels.get("v1") is not None, "v1 is mirrored")

    await kv.delete(vmodel_key("v1"))

    await eventually(
        registry, lambda: registry.vmodels.get("v1") is None, "v1 is gone from the mirror"
    )
    assert changes.seen == [(Table.VMODELS, "v1"), (Table.VMODELS, "v1")]


async def test_expired_instance_lease_removes_the_instance(kv: MemoryKV, registry: Registry):
    lease = await kv.grant_lease(30)
    await registry.put_instance(A, InstanceRecord(capacity_units=5), lease)
    await eventually(
        registry, lambda: registry.instances.get(A) is not None, "the instance is mirrored"
    )

    await lease.revoke()

    await eventually(registry, lambda: registry.instances.get(A) is None, "the instance is gone")


async def test_watch_skips_a_bad_value_and_keeps_the_last_good_record(
    kv: MemoryKV, registry: Registry
):
    await kv.put(model_key("m1"), model(model_path="v1").to_json())
    await kv.put(model_key("m1"), b'{"mPath":"no type"}')
    await kv.put(model_key("m2"), model().to_json())

    await eventually(registry, lambda: registry.models.get("m2") is not None, "m2 is mirrored")
    assert registry.models.get("m1") == model(model_path="v1")


async def test_failing_listener_does_not_stop_the_mirror(kv: MemoryKV, registry: Registry):
    def broken(table: Table, ident: str) -> None:
        raise RuntimeError("listener bug")

    registry.on_change(broken)
    later = Changes()
    registry.on_change(later)

    await kv.put(model_key("m1"), model().to_json())
    await kv.put(model_key("m2"), model().to_json())

    await eventually(registry, lambda: registry.models.get("m2") is not None, "m2 is mirrored")
    assert later.seen == [(Table.REGISTRY, "m1"), (Table.REGISTRY, "m2")]


# ---------------------------------------------------------------- writes and read-your-writes


async def test_created_record_is_visible_at_once_and_stored(
    kv: MemoryKV, registry: Registry, changes: Changes
):
    written = await registry.update_model("m1", lambda rec: model(model_path="p"))

    # no await in between: the watch has not run yet
    assert registry.models.get("m1") == written == model(model_path="p")
    assert changes.seen == [(Table.REGISTRY, "m1")]
    assert await stored_model(kv, "m1") == model(model_path="p")


async def test_updated_record_is_visible_at_once(kv: MemoryKV, registry: Registry):
    await kv.put(model_key("m1"), model().to_json())
    await caught_up(kv, registry)

    await registry.update_model("m1", lambda rec: rec and rec.with_copy_loaded(A, T0))

    assert A in (registry.models.get("m1") or model()).loaded_in
    assert A in ((await stored_model(kv, "m1")) or model()).loaded_in


async def test_every_change_of_a_table_moves_its_version(kv: MemoryKV, registry: Registry):
    """Snapshots keyed on the version (the router's peer list) are never stale."""
    versions = [registry.models.version]
    registry.on_change(
        lambda table, ident: table is Table.REGISTRY and versions.append(registry.models.version)
    )
    await registry.update_model("m1", lambda rec: model())  # own write, before its event
    await caught_up(kv, registry)  # the watch event replaces it
    await kv.put(model_key("m2"), model().to_json())  # another router's write
    await caught_up(kv, registry)
    await registry.update_model("m1", lambda rec: None)  # own delete
    await kv.delete(model_key("m2"))  # another router's delete
    await caught_up(kv, registry)
    assert registry.models.get("m1") is None and registry.models.get("m2") is None
    assert len(versions) >= 5
    assert all(a < b for a, b in itertools.pairwise(versions)), versions


async def test_own_write_survives_its_watch_event(kv: MemoryKV, registry: Registry):
    await registry.update_vmodel("v1", lambda rec: VModelRecord(ModelId("m1"), ModelId("m2")))
    await caught_up(kv, registry)

    assert registry.vmodels.get("v1") == VModelRecord(ModelId("m1"), ModelId("m2"))


async def test_deleted_record_disappears_at_once(
    kv: MemoryKV, registry: Registry, changes: Changes
):
    await kv.put(model_key("m1"), model().to_json())
    await caught_up(kv, registry)

    result = await registry.update_model("m1", lambda rec: None)

    assert result is None
    assert registry.models.get("m1") is None
    assert changes.seen[-1] == (Table.REGISTRY, "m1")
    assert await kv.get(model_key("m1")) is None


async def test_unchanged_writes_nothing(kv: MemoryKV, registry: Registry):
    await kv.put(model_key("m1"), model().to_json())
    await caught_up(kv, registry)
    revision = kv.revision

    result = await registry.update_model("m1", lambda rec: UNCHANGED)

    assert result == model()
    assert kv.revision == revision


async def test_error_raised_by_the_change_writes_nothing(kv: MemoryKV, registry: Registry):
    revision = kv.revision

    def refuse(rec: ModelRecord | None) -> ModelRecord:
        raise LookupError("refused")

    with pytest.raises(LookupError):
        await registry.update_model("m1", refuse)

    assert kv.revision == revision
    assert registry.models.get("m1") is None


async def test_write_fails_while_the_store_is_away_and_the_mirror_keeps_serving(
    kv: MemoryKV, registry: Registry
):
    await registry.update_model("m1", lambda rec: model())
    kv.set_available(False)
    try:
        with pytest.raises(StoreUnavailable):
            await registry.update_model("m2", lambda rec: model())

        assert registry.models.get("m1") == model()
        assert registry.models.get("m2") is None
    finally:
        kv.set_available(True)


# ---------------------------------------------------------------- compare-and-swap


async def test_write_lost_to_another_router_is_retried_on_its_record(
    kv: MemoryKV, registry: Registry
):
    await kv.put(model_key("m1"), model().to_json())
    await caught_up(kv, registry)
    calls: list[ModelRecord | None] = []

    def add_copy(rec: ModelRecord | None) -> ModelRecord | None:
        calls.append(rec)
        return rec and rec.with_copy_loaded(A, T0)

    # the other router writes; our mirror has not seen its event yet (no await in between)
    await kv.put(model_key("m1"), model().with_copy_failed(B, "oom", T0).to_json())
    result = await registry.update_model("m1", add_copy)

    assert calls[0] == model()  # first try: the stale mirror
    assert calls[-1] == model().with_copy_failed(B, "oom", T0)  # retry: what etcd holds
    assert result == model().with_copy_failed(B, "oom", T0).with_copy_loaded(A, T0)
    assert await stored_model(kv, "m1") == result
    assert registry.models.get("m1") == result


async def test_create_over_a_key_another_router_just_created_sees_its_record(
    kv: MemoryKV, registry: Registry
):
    await kv.put(model_key("m1"), model(model_path="theirs").to_json())  # mirror not told yet
    calls: list[ModelRecord | None] = []

    def create_if_absent(rec: ModelRecord | None) -> ModelRecord | Unchanged:
        calls.append(rec)
        return model(model_path="ours") if rec is None else UNCHANGED

    result = await registry.update_model("m1", create_if_absent)

    assert calls == [None, model(model_path="theirs")]
    assert result == model(model_path="theirs")
    assert await stored_model(kv, "m1") == model(model_path="theirs")


async def test_update_of_a_record_another_router_deleted_sees_none(
    kv: MemoryKV, registry: Registry
):
    await kv.put(model_key("m1"), model().to_json())
    await caught_up(kv, registry)
    await kv.delete(model_key("m1"))  # mirror not told yet
    calls: list[ModelRecord | None] = []

    def touch(rec: ModelRecord | None) -> ModelRecord | None:
        calls.append(rec)
        return rec and rec.with_copy_loaded(A, T0)

    result = await registry.update_model("m1", touch)

    assert calls == [model(), None]
    assert result is None
    assert registry.models.get("m1") is None
    assert await kv.get(model_key("m1")) is None


class ContendedKV(MemoryKV):
    """MemoryKV where another router always writes the key just before our conditional put."""

    async def put_if(self, key: str, value: bytes, **kwargs) -> bool:
        await self.put(key, model(model_path=f"theirs@{self.revision}").to_json())
        return await super().put_if(key, value, **kwargs)


async def test_endless_contention_gives_up_with_store_unavailable():
    kv = ContendedKV()
    reg = Registry(kv, LAYOUT)
    await reg.start()
    calls = 0

    def mine(rec: ModelRecord | None) -> ModelRecord:
        nonlocal calls
        calls += 1
        return model(model_path="mine")

    try:
        with pytest.raises(StoreUnavailable, match="concurrent"):
            await reg.update_model("m1", mine)

        assert calls == CAS_ATTEMPTS
        stored = await stored_model(kv, "m1")
        assert stored is not None
        assert stored.model_path.startswith("theirs")
    finally:
        await reg.stop()
        await kv.close()


async def test_record_can_be_deleted_right_after_it_was_created(kv: MemoryKV, registry: Registry):
    await registry.update_model("m1", lambda rec: model())
    # its watch event has not arrived: the mirror does not know its mod revision yet

    await registry.update_model("m1", lambda rec: None)

    assert registry.models.get("m1") is None
    assert await kv.get(model_key("m1")) is None


async def test_delete_removes_a_record_the_mirror_has_not_seen_yet(
    kv: MemoryKV, registry: Registry
):
    await kv.put(model_key("m1"), model().to_json())  # another router; mirror not told yet

    await registry.update_model("m1", lambda rec: None)
    await caught_up(kv, registry)

    assert await kv.get(model_key("m1")) is None
    assert registry.models.get("m1") is None


# ---------------------------------------------------------------- resync after losing etcd


class LosableKV(MemoryKV):
    """MemoryKV whose running watches break when the store goes away, as an etcd watch
    stream does (plain MemoryKV.set_available(False) only fails new requests). A broken
    watch raises StoreUnavailable at its next event instead of delivering it."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 0

    def set_available(self, available: bool) -> None:
        if not available:
            self.outages += 1
        super().set_available(available)

    async def watch_prefix(
        self, prefix: str, *, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        outages = self.outages
        events = super().watch_prefix(prefix, start_revision=start_revision)
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                if self.outages != outages:
                    raise StoreUnavailable("watch stream lost")
                yield event


@pytest.fixture
def fast_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "RESYNC_DELAY_S", 0.001)


@pytest.mark.usefixtures("fast_resync")
async def test_resync_after_the_watch_breaks_catches_up_on_missed_changes(
    caplog: pytest.LogCaptureFixture,
):
    kv = LosableKV()
    reg = Registry(kv, LAYOUT)
    changes = Changes()
    reg.on_change(changes)
    try:
        await kv.put(model_key("kept"), model().to_json())
        await kv.put(model_key("deleted"), model().to_json())
        await kv.put(model_key("changed"), model().to_json())
        await reg.start()
        await caught_up(kv, reg)  # the watch is running

        kv.set_available(False)
        assert reg.models.get("kept") == model()  # served from the mirror meanwhile
        kv.set_available(True)
        # changes the broken watch never delivers
        await kv.put(model_key("created"), model().to_json())
        await kv.delete(model_key("deleted"))
        await kv.put(model_key("changed"), model().with_copy_loaded(A, T0).to_json())

        await eventually(reg, lambda: reg.models.get("created") is not None, "the mirror resynced")
        assert reg.models.get("deleted") is None
        assert reg.models.get("changed") == model().with_copy_loaded(A, T0)
        assert reg.models.get("kept") == model()
        assert (Table.REGISTRY, "deleted") in changes.seen
        assert "watch lost etcd" in caplog.text  # caught up by a resync, not by the watch

        # and the watch follows again from the resync's revision
        await kv.put(model_key("after"), model().to_json())
        await eventually(reg, lambda: reg.models.get("after") is not None, "the watch resumed")
    finally:
        await reg.stop()
        await kv.close()


class GatedKV(LosableKV):
    """LosableKV whose next range read, once `hold()` is called, waits after taking its
    snapshot until `release()`: what the test does meanwhile happens during the resync."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = asyncio.Event()
        self.gate = asyncio.Event()
        self._holding = False

    def hold(self) -> None:
        self._holding = True

    def release(self) -> None:
        self.gate.set()

    async def range_prefix(self, prefix: str, *, page_size: int = 1000):  # type: ignore[no-untyped-def]
        found = await super().range_prefix(prefix, page_size=page_size)
        if self._holding:
            self._holding = False
            self.taken.set()
            await self.gate.wait()
        return found


@pytest.mark.usefixtures("fast_resync")
async def test_resync_never_puts_back_what_this_router_wrote_while_it_ran():
    kv = GatedKV()
    reg = Registry(kv, LAYOUT)
    loaded = model().with_copy_loaded(A, T0)
    seen_m1: list[ModelRecord | None] = []
    reg.on_change(lambda table, ident: ident == "m1" and seen_m1.append(reg.models.get("m1")))
    try:
        await kv.put(model_key("m1"), model().to_json())
        await kv.put(model_key("m2"), model().to_json())
        await reg.start()
        await caught_up(kv, reg)

        kv.hold()
        kv.set_available(False)
        kv.set_available(True)
        await kv.put(model_key("x"), model().to_json())  # the watch breaks at this event
        await asyncio.wait_for(kv.taken.wait(), 2)  # the resync's snapshot is taken: it waits
        await reg.update_model("m1", lambda rec: loaded)  # this router, after the snapshot
        await reg.update_model("m2", lambda rec: None)
        seen_m1.clear()
        kv.release()

        await caught_up(kv, reg)
        assert reg.models.get("m1") == loaded
        assert reg.models.get("m2") is None
        assert all(rec == loaded for rec in seen_m1), seen_m1  # never the older snapshot
        assert await stored_model(kv, "m1") == loaded
    finally:
        await reg.stop()
        await kv.close()


@pytest.mark.usefixtures("fast_resync")
async def test_a_resync_while_serving_is_paced_and_the_start_is_not(
    monkeypatch: pytest.MonkeyPatch,
):
    steps: list[int] = []

    class CountingPacer(registry_module.Pacer):
        async def step(self) -> None:
            steps.append(1)
            await super().step()

    monkeypatch.setattr(registry_module, "Pacer", CountingPacer)
    kv = LosableKV()
    reg = Registry(kv, LAYOUT)
    try:
        for i in range(50):
            await kv.put(model_key(f"m{i}"), model().to_json())
        await reg.start()
        assert steps == []
        await caught_up(kv, reg)
        kv.set_available(False)
        kv.set_available(True)
        await kv.put(model_key("late"), model().to_json())
        await eventually(reg, lambda: reg.models.get("late") is not None, "the mirror resynced")
        await caught_up(kv, reg)  # the watch runs again only once the resync has finished
        assert len(steps) >= 51  # one per record of the snapshot
    finally:
        await reg.stop()
        await kv.close()
