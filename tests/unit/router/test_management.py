"""The ModelMesh management operations (mmesh.router.management) on MemoryKV + Registry.

Loads go through a fake `place` callback that writes the copy's state to the registry the
way a loading router would; `FakeLocal` stands in for this pod's LocalModels (Management
only evicts through it). Reference: modelmesh-features.md §1.1, §4.7, §4.10.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.kv import MemoryKV
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord
from mmesh.router.errors import (
    AlreadyExists,
    HasReferents,
    InvalidRequest,
    ModelNotFound,
)
from mmesh.router.loading import LocalModels
from mmesh.router.management import (
    LAST_USED_AGE_ON_ADD_MS,
    LAST_USED_AGE_ON_LOAD_NOW_MS,
    Management,
    ModelInfo,
)
from mmesh.router.modelstatus import ModelState, VModelState
from mmesh.router.registry import UNCHANGED, Registry

LAYOUT = KeyLayout("", "test-mesh")
EXPIRY_MS = 900_000
HERE = InstanceId("router-here")

V = "my-vmodel"
OLD, NEW, OTHER = "model-v1", "model-v2", "model-v3"
INFO = ModelInfo(type="sklearn", path="s3://models/v1", key='{"bucket":"b"}')
INFO_NEW = ModelInfo(type="sklearn", path="s3://models/v2")
INFO_OTHER = ModelInfo(type="sklearn", path="s3://models/v3")


# ---------------------------------------------------------------- fakes and fixtures


class FakeLocal:
    """This pod's LocalModels, as far as Management uses it."""

    def __init__(self) -> None:
        self.evicted: list[str] = []
        self.instance_id = "fake-local"

    def is_loaded(self, model_id: str) -> bool:
        return False  # copies come from FakeCluster, recorded in the registry

    async def ensure_loaded(self, model_id: str, record: ModelRecord) -> None:
        raise AssertionError("loads must go through `place`")

    def evict(self, model_id: str) -> None:
        self.evicted.append(model_id)


class FakeCluster:
    """The `place` callback. Each load is recorded and ends as scripted per model:
    "load" (default) marks a copy loaded on HERE, "fail" records a failed load there, and
    "hold" leaves the copy loading until `finish`, "lost" records nothing at all."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.placed: list[str] = []
        self.script: dict[str, str] = {}

    async def place(self, model_id: str, record: ModelRecord) -> None:
        self.placed.append(model_id)
        outcome = self.script.get(model_id, "load")
        if outcome == "lost":  # the attempt failed before anything reached the registry
            return
        if outcome == "hold":
            await self._mark(model_id, lambda rec: rec.with_copy_loading(HERE, now_ms()))
        elif outcome == "fail":
            message = f"runtime cannot load {model_id}"
            await self._mark(model_id, lambda rec: rec.with_copy_failed(HERE, message, now_ms()))
        else:
            await self.finish(model_id)

    async def finish(self, model_id: str) -> None:
        await self._mark(model_id, lambda rec: rec.with_copy_loaded(HERE, now_ms()))

    async def _mark(self, model_id: str, change: Callable[[ModelRecord], ModelRecord]) -> None:
        await self.registry.update_model(
            model_id, lambda rec: UNCHANGED if rec is None else change(rec)
        )


@pytest.fixture
def local() -> FakeLocal:
    return FakeLocal()


@pytest.fixture
def cluster(registry: Registry) -> FakeCluster:
    return FakeCluster(registry)


def make_management(
    registry: Registry, local: FakeLocal, cluster: FakeCluster, **kwargs
) -> Management:
    return Management(
        registry=registry,
        local=cast(LocalModels, local),
        failure_expiry_ms=EXPIRY_MS,
        place=cluster.place,
        **{"drives_transitions": lambda: True, **kwargs},
    )


@pytest.fixture
async def mgmt(
    registry: Registry, local: FakeLocal, cluster: FakeCluster
) -> AsyncIterator[Management]:
    management = make_management(registry, local, cluster)
    yield management
    await settle()


async def settle() -> None:
    """Let spawned transition tasks run to their end (they only touch MemoryKV)."""
    for _ in range(20):
        await asyncio.sleep(0)


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


async def caught_up(kv: MemoryKV, registry: Registry) -> None:
    """Wait until the registry watch has delivered every write so far, as it has by the time
    a client's next call arrives (events come in order, so a marker arriving is enough)."""
    marker = InstanceId(f"marker-{kv.revision}")
    await kv.put(LAYOUT.instance_key(marker), InstanceRecord().to_json())
    await eventually(
        registry, lambda: registry.instances.get(marker) is not None, "the watch caught up"
    )


def record_of(registry: Registry, model_id: str) -> ModelRecord:
    rec = registry.models.get(model_id)
    assert rec is not None, f"{model_id} is not registered"
    return rec


# ---------------------------------------------------------------- register


async def test_register_adds_a_not_loaded_model_with_its_info(
    mgmt: Management, kv: MemoryKV, cluster: FakeCluster
):
    status = await mgmt.register(OLD, INFO, load_now=False, sync=False)

    assert status.state is ModelState.NOT_LOADED
    stored = await kv.get(LAYOUT.model_key(ModelId(OLD)))
    assert stored is not None
    rec = ModelRecord.from_json(stored.value)
    assert (rec.model_type, rec.model_path, rec.encoded_key) == (INFO.type, INFO.path, INFO.key)
    assert cluster.placed == []


async def test_register_is_idempotent_with_the_same_info(mgmt: Management, kv: MemoryKV):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)
    revision = kv.revision

    status = await mgmt.register(OLD, INFO, load_now=False, sync=False)

    assert status.state is ModelState.NOT_LOADED
    assert kv.revision == revision  # nothing written


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ModelInfo("onnx", INFO.path, INFO.key), id="type"),
        pytest.param(ModelInfo(INFO.type, "s3://elsewhere", INFO.key), id="path"),
        pytest.param(ModelInfo(INFO.type, INFO.path, '{"bucket":"c"}'), id="key"),
        pytest.param(ModelInfo(INFO.type, INFO.path), id="no-key"),
    ],
)
async def test_register_with_different_info_is_already_exists(
    mgmt: Management, registry: Registry, other: ModelInfo
):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    with pytest.raises(AlreadyExists) as info:
        await mgmt.register(OLD, other, load_now=False, sync=False)

    assert str(info.value).startswith("Model already exists with different")
    assert info.value.grpc_code == "ALREADY_EXISTS"
    assert record_of(registry, OLD).model_path == INFO.path


@pytest.mark.parametrize(
    ("model_id", "info"),
    [
        pytest.param("", INFO, id="empty-id"),
        pytest.param("a/b", INFO, id="slash-in-id"),
        pytest.param(OLD, ModelInfo(type=""), id="empty-type"),
    ],
)
async def test_register_rejects_invalid_input(
    mgmt: Management, registry: Registry, model_id: str, info: ModelInfo
):
    with pytest.raises(InvalidRequest) as raised:
        await mgmt.register(model_id, info, load_now=False, sync=False)

    assert raised.value.grpc_code == "INVALID_ARGUMENT"
    assert registry.models.items == {}


async def test_register_with_load_now_and_sync_returns_loaded(
    mgmt: Management, cluster: FakeCluster
):
    status = await mgmt.register(OLD, INFO, load_now=True, sync=True)

    assert cluster.placed == [OLD]
    assert status.state is ModelState.LOADED
    assert [(c.location, c.state) for c in status.copies] == [(HERE, ModelState.LOADED)]


async def test_register_with_load_now_starts_a_load_without_waiting(
    mgmt: Management, cluster: FakeCluster
):
    cluster.script[OLD] = "hold"

    await mgmt.register(OLD, INFO, load_now=True, sync=False)

    await eventually(
        mgmt.registry, lambda: mgmt.model_status(OLD).state is ModelState.LOADING, "loading"
    )
    assert cluster.placed == [OLD]


@pytest.mark.parametrize(
    ("load_now", "age_ms"),
    [(False, LAST_USED_AGE_ON_ADD_MS), (True, LAST_USED_AGE_ON_LOAD_NOW_MS)],
    ids=["added", "load-now"],
)
async def test_register_backdates_last_used_so_new_models_are_evicted_first(
    mgmt: Management, registry: Registry, load_now: bool, age_ms: int
):
    before = now_ms()
    await mgmt.register(OLD, INFO, load_now=load_now, sync=False)

    last_used = record_of(registry, OLD).last_used_ms
    assert before - age_ms <= last_used <= now_ms() - age_ms


async def test_register_keeps_an_explicit_last_used_time(mgmt: Management, registry: Registry):
    await mgmt.register(OLD, INFO, load_now=False, sync=False, last_used_ms=1234)

    assert record_of(registry, OLD).last_used_ms == 1234


# ---------------------------------------------------------------- status and ensureLoaded


async def test_status_of_an_unknown_model_is_not_found(mgmt: Management):
    assert mgmt.model_status("nobody").state is ModelState.NOT_FOUND


async def test_status_never_triggers_a_load(mgmt: Management, cluster: FakeCluster):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    assert mgmt.model_status(OLD).state is ModelState.NOT_LOADED
    await settle()
    assert cluster.placed == []


async def test_ensure_loaded_on_an_unknown_model_is_not_found(mgmt: Management):
    with pytest.raises(ModelNotFound) as info:
        await mgmt.ensure_loaded("nobody", sync=True)

    assert info.value.grpc_code == "NOT_FOUND"


async def test_ensure_loaded_with_sync_returns_loaded(mgmt: Management, cluster: FakeCluster):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    status = await mgmt.ensure_loaded(OLD, sync=True)

    assert status.state is ModelState.LOADED
    assert cluster.placed == [OLD]


async def test_failed_load_is_reported_in_the_status(mgmt: Management, cluster: FakeCluster):
    cluster.script[OLD] = "fail"
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    status = await mgmt.ensure_loaded(OLD, sync=True)

    assert status.state is ModelState.LOADING_FAILED
    assert status.errors == (f"runtime cannot load {OLD}",)
    assert [(c.location, c.state) for c in status.copies] == [(HERE, ModelState.LOADING_FAILED)]


# ---------------------------------------------------------------- unregister


async def test_unregister_deletes_the_model_and_evicts_it_here(
    mgmt: Management, kv: MemoryKV, registry: Registry, local: FakeLocal
):
    await mgmt.register(OLD, INFO, load_now=True, sync=True)
    await caught_up(kv, registry)

    await mgmt.unregister(OLD)

    assert mgmt.model_status(OLD).state is ModelState.NOT_FOUND
    assert await kv.get(LAYOUT.model_key(ModelId(OLD))) is None
    assert local.evicted == [OLD]


async def test_unregister_of_an_unknown_model_is_a_no_op(mgmt: Management, kv: MemoryKV):
    revision = kv.revision

    await mgmt.unregister("nobody")

    assert kv.revision == revision


@pytest.mark.parametrize("role", ["active", "target"])
async def test_unregister_is_refused_while_a_vmodel_refers_to_the_model(
    mgmt: Management, registry: Registry, cluster: FakeCluster, local: FakeLocal, role: str
):
    await mgmt.set_vmodel(V, OLD, info=INFO)
    await mgmt.ensure_loaded(OLD, sync=True)
    cluster.script[NEW] = "hold"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW)  # in transition: OLD active, NEW target
    model_id = OLD if role == "active" else NEW

    with pytest.raises(HasReferents, match=V) as info:
        await mgmt.unregister(model_id)

    assert info.value.grpc_code == "FAILED_PRECONDITION"
    assert registry.models.get(model_id) is not None
    assert local.evicted == []


async def test_unregister_right_after_register_deletes_the_model(mgmt: Management, kv: MemoryKV):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    await mgmt.unregister(OLD)

    assert await kv.get(LAYOUT.model_key(ModelId(OLD))) is None


# ---------------------------------------------------------------- setVModel: new vmodels


async def test_set_vmodel_with_model_info_creates_the_target_and_the_vmodel(
    mgmt: Management, registry: Registry
):
    status = await mgmt.set_vmodel(V, OLD, info=INFO, auto_delete=True, owner="team-a")

    assert (status.state, status.active_model, status.target_model) == (
        VModelState.DEFINED,
        OLD,
        OLD,
    )
    assert status.owner == "team-a"
    assert status.active is not None
    assert status.active.state is ModelState.NOT_LOADED
    assert status.target is None  # only reported while target != active
    rec = record_of(registry, OLD)
    assert (rec.model_type, rec.model_path, rec.auto_delete) == (INFO.type, INFO.path, True)


async def test_set_vmodel_without_model_info_needs_an_existing_target(
    mgmt: Management, registry: Registry
):
    with pytest.raises(ModelNotFound, match=OLD):
        await mgmt.set_vmodel(V, OLD)

    assert registry.vmodels.get(V) is None


async def test_set_vmodel_on_an_existing_model_points_at_it(mgmt: Management):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    status = await mgmt.set_vmodel(V, OLD)

    assert (status.state, status.active_model) == (VModelState.DEFINED, OLD)


async def test_set_vmodel_with_load_now_loads_a_new_vmodels_model(
    mgmt: Management, cluster: FakeCluster
):
    await mgmt.set_vmodel(V, OLD, info=INFO, load_now=True)

    await eventually(
        mgmt.registry, lambda: mgmt.model_status(OLD).state is ModelState.LOADED, "OLD loaded"
    )
    assert cluster.placed == [OLD]


async def test_new_vmodel_takes_the_default_owner(
    registry: Registry, local: FakeLocal, cluster: FakeCluster
):
    mgmt = make_management(registry, local, cluster, default_owner="ns-a")

    status = await mgmt.set_vmodel(V, OLD, info=INFO)

    assert status.owner == "ns-a"


async def test_default_owner_does_not_block_updates_without_an_owner(
    registry: Registry, local: FakeLocal, cluster: FakeCluster
):
    creator = make_management(registry, local, cluster)
    await creator.set_vmodel(V, OLD, info=INFO, owner="team-a")
    mgmt = make_management(registry, local, cluster, default_owner="ns-a")

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW)

    assert (status.target_model, status.owner) == (NEW, "team-a")


async def test_update_only_on_a_missing_vmodel_is_not_found(mgmt: Management):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    with pytest.raises(ModelNotFound, match=V) as info:
        await mgmt.set_vmodel(V, OLD, update_only=True)

    assert info.value.grpc_code == "NOT_FOUND"
    assert mgmt.vmodel_status(V).state is VModelState.NOT_FOUND


@pytest.mark.parametrize(
    ("existing_owner", "kwargs", "error"),
    [
        pytest.param(None, {"update_only": True}, ModelNotFound, id="update-only"),
        pytest.param("team-a", {"owner": "team-b"}, AlreadyExists, id="owner"),
        pytest.param("", {"expected_target": OTHER}, HasReferents, id="expected-target"),
    ],
)
async def test_rejected_set_vmodel_does_not_create_its_target_model(
    mgmt: Management, existing_owner: str | None, kwargs: dict[str, Any], error: type[Exception]
):
    if existing_owner is not None:
        await mgmt.register(OLD, INFO, load_now=False, sync=False)
        await mgmt.set_vmodel(V, OLD, owner=existing_owner)

    with pytest.raises(error):
        await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True, **kwargs)

    # an orphan auto-delete model would never be deleted: no vmodel refers to it
    assert mgmt.model_status(NEW).state is ModelState.NOT_FOUND


async def test_set_vmodel_with_info_conflicting_with_the_existing_target_is_already_exists(
    mgmt: Management,
):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)

    with pytest.raises(AlreadyExists):
        await mgmt.set_vmodel(V, OLD, info=INFO_OTHER)

    assert mgmt.vmodel_status(V).state is VModelState.NOT_FOUND


# ---------------------------------------------------------------- setVModel: owner and CAS


async def test_set_vmodel_with_another_owner_is_already_exists(mgmt: Management):
    await mgmt.set_vmodel(V, OLD, info=INFO, owner="team-a")

    with pytest.raises(AlreadyExists) as info:
        await mgmt.set_vmodel(V, NEW, info=INFO_NEW, owner="team-b")

    assert info.value.grpc_code == "ALREADY_EXISTS"
    status = mgmt.vmodel_status(V)
    assert (status.target_model, status.owner) == (OLD, "team-a")


async def test_set_vmodel_with_a_stale_expected_target_fails_precondition(mgmt: Management):
    await mgmt.set_vmodel(V, OLD, info=INFO)

    with pytest.raises(HasReferents) as info:
        await mgmt.set_vmodel(V, NEW, info=INFO_NEW, expected_target=OTHER)

    assert info.value.grpc_code == "FAILED_PRECONDITION"
    assert mgmt.vmodel_status(V).target_model == OLD


async def test_set_vmodel_with_the_current_expected_target_succeeds(mgmt: Management):
    await mgmt.set_vmodel(V, OLD, info=INFO)

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW, expected_target=OLD)

    assert status.target_model == NEW


# ---------------------------------------------------------------- transitions


async def vmodel_on_loaded_old(mgmt: Management, *, auto_delete: bool = True) -> None:
    """V serves OLD, which has a loaded copy."""
    await mgmt.set_vmodel(V, OLD, info=INFO, auto_delete=auto_delete, owner="team-a")
    status = await mgmt.ensure_loaded(OLD, sync=True)
    assert status.state is ModelState.LOADED


async def test_new_target_waits_for_a_loaded_copy_while_the_active_model_serves(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "hold"

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)

    assert (status.state, status.active_model, status.target_model) == (
        VModelState.TRANSITIONING,
        OLD,
        NEW,
    )
    assert status.active is not None
    assert status.active.state is ModelState.LOADED
    await eventually(mgmt.registry, lambda: cluster.placed == [OLD, NEW], "NEW's load was started")
    await settle()
    status = mgmt.vmodel_status(V)
    assert status.state is VModelState.TRANSITIONING
    assert status.target is not None
    assert status.target.state is ModelState.LOADING


async def test_transition_completes_when_the_target_loads_and_retires_the_old_model(
    mgmt: Management, registry: Registry, cluster: FakeCluster, local: FakeLocal
):
    await vmodel_on_loaded_old(mgmt, auto_delete=True)
    cluster.script[NEW] = "hold"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)
    await eventually(mgmt.registry, lambda: NEW in cluster.placed, "NEW's load was started")

    await cluster.finish(NEW)

    await eventually(
        mgmt.registry, lambda: mgmt.vmodel_status(V).state is VModelState.DEFINED, "promoted"
    )
    status = mgmt.vmodel_status(V)
    assert (status.active_model, status.target_model, status.owner) == (NEW, NEW, "team-a")
    await eventually(mgmt.registry, lambda: registry.models.get(OLD) is None, "OLD auto-deleted")
    assert local.evicted == [OLD]
    assert registry.models.get(NEW) is not None


async def test_transition_keeps_an_old_model_that_is_not_auto_delete(
    mgmt: Management, registry: Registry
):
    await vmodel_on_loaded_old(mgmt, auto_delete=False)

    await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)

    await eventually(mgmt.registry, lambda: mgmt.vmodel_status(V).active_model == NEW, "promoted")
    await settle()
    assert registry.models.get(OLD) is not None


async def test_transition_completes_when_another_router_loads_the_target(
    mgmt: Management, kv: MemoryKV, registry: Registry, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "hold"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)
    await eventually(mgmt.registry, lambda: NEW in cluster.placed, "NEW's load was started")
    await caught_up(kv, registry)

    # a copy finishes loading on another pod: only the watch tells this router
    elsewhere = record_of(registry, NEW).with_copy_loaded(InstanceId("router-there"), now_ms())
    await kv.put(LAYOUT.model_key(ModelId(NEW)), elsewhere.to_json())

    await eventually(mgmt.registry, lambda: mgmt.vmodel_status(V).active_model == NEW, "promoted")


async def test_set_vmodel_with_sync_returns_once_the_transition_is_done(mgmt: Management):
    await vmodel_on_loaded_old(mgmt)

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW, sync=True)

    assert (status.state, status.active_model) == (VModelState.DEFINED, NEW)
    assert status.active is not None
    assert status.active.state is ModelState.LOADED


async def test_set_vmodel_with_sync_returns_when_the_target_fails(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "fail"

    async with asyncio.timeout(2):
        status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW, sync=True)

    assert (status.state, status.active_model) == (VModelState.TRANSITION_FAILED, OLD)


async def test_new_vmodel_with_load_now_and_sync_returns_once_loaded(mgmt: Management):
    async with asyncio.timeout(2):
        status = await mgmt.set_vmodel(V, OLD, info=INFO, load_now=True, sync=True)

    assert status.state is VModelState.DEFINED
    assert status.active is not None
    assert status.active.state is ModelState.LOADED


async def test_force_switches_at_once_and_retires_the_old_model(
    mgmt: Management, registry: Registry, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt, auto_delete=True)
    cluster.script[NEW] = "hold"

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW, force=True)

    assert (status.state, status.active_model, status.target_model) == (
        VModelState.DEFINED,
        NEW,
        NEW,
    )
    await eventually(mgmt.registry, lambda: registry.models.get(OLD) is None, "OLD auto-deleted")


async def test_switch_is_immediate_when_the_active_model_is_loaded_nowhere(
    mgmt: Management, cluster: FakeCluster
):
    await mgmt.set_vmodel(V, OLD, info=INFO)  # never loaded

    status = await mgmt.set_vmodel(V, NEW, info=INFO_NEW)

    assert (status.state, status.active_model) == (VModelState.DEFINED, NEW)
    assert NEW not in cluster.placed  # nothing to wait for, so nothing loaded


async def test_target_that_fails_to_load_marks_the_transition_failed(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "fail"

    await mgmt.set_vmodel(V, NEW, info=INFO_NEW)

    await eventually(
        mgmt.registry,
        lambda: mgmt.vmodel_status(V).state is VModelState.TRANSITION_FAILED,
        "marked failed",
    )
    status = mgmt.vmodel_status(V)
    assert (status.active_model, status.target_model) == (OLD, NEW)  # requests still go to OLD
    assert status.active is not None
    assert status.active.state is ModelState.LOADED
    assert status.target is not None
    assert status.target.state is ModelState.LOADING_FAILED
    assert status.target.errors == (f"runtime cannot load {NEW}",)


async def test_failed_transition_completes_when_a_retried_load_succeeds(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "fail"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW)
    await eventually(
        mgmt.registry,
        lambda: mgmt.vmodel_status(V).state is VModelState.TRANSITION_FAILED,
        "marked failed",
    )

    cluster.script[NEW] = "load"
    await mgmt.ensure_loaded(NEW, sync=True)

    await eventually(
        mgmt.registry, lambda: mgmt.vmodel_status(V).state is VModelState.DEFINED, "promoted"
    )
    assert mgmt.vmodel_status(V).active_model == NEW


async def test_new_target_while_one_failed_restarts_the_transition(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "fail"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW)
    await eventually(
        mgmt.registry,
        lambda: mgmt.vmodel_status(V).state is VModelState.TRANSITION_FAILED,
        "marked failed",
    )

    status = await mgmt.set_vmodel(V, OTHER, info=INFO_OTHER)

    assert status.target_model == OTHER
    await eventually(mgmt.registry, lambda: mgmt.vmodel_status(V).active_model == OTHER, "promoted")


async def test_replaced_pending_target_is_auto_deleted(
    mgmt: Management, kv: MemoryKV, registry: Registry, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "hold"
    cluster.script[OTHER] = "hold"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)
    await caught_up(kv, registry)

    await mgmt.set_vmodel(V, OTHER, info=INFO_OTHER, auto_delete=True)

    # reference: VModelManager.updateVModel drops the old target's ref (prevTargetIdToDelete)
    await eventually(mgmt.registry, lambda: registry.models.get(NEW) is None, "NEW auto-deleted")
    assert registry.models.get(OTHER) is not None


# ---------------------------------------------------------------- getVModelStatus


async def test_vmodel_status_of_an_unknown_vmodel_is_not_found(mgmt: Management):
    status = mgmt.vmodel_status("nobody")

    assert (status.state, status.active_model, status.target_model, status.owner) == (
        VModelState.NOT_FOUND,
        "",
        "",
        "",
    )


async def test_vmodel_status_with_another_owner_is_not_found(mgmt: Management):
    await mgmt.set_vmodel(V, OLD, info=INFO, owner="team-a")

    status = mgmt.vmodel_status(V, owner="team-b")

    assert (status.state, status.active_model, status.target_model) == (
        VModelState.NOT_FOUND,
        "",
        "",
    )


@pytest.mark.parametrize("owner", ["", "team-a"], ids=["no-owner", "same-owner"])
async def test_vmodel_status_with_no_or_the_same_owner_is_found(mgmt: Management, owner: str):
    await mgmt.set_vmodel(V, OLD, info=INFO, owner="team-a")

    status = mgmt.vmodel_status(V, owner=owner)

    assert (status.state, status.active_model, status.owner) == (
        VModelState.DEFINED,
        OLD,
        "team-a",
    )


# ---------------------------------------------------------------- deleteVModel


async def test_delete_vmodel_deletes_its_auto_delete_models(
    mgmt: Management, kv: MemoryKV, registry: Registry, cluster: FakeCluster, local: FakeLocal
):
    await vmodel_on_loaded_old(mgmt, auto_delete=True)
    cluster.script[NEW] = "hold"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW, auto_delete=True)  # OLD active, NEW target
    await caught_up(kv, registry)

    await mgmt.delete_vmodel(V)

    assert mgmt.vmodel_status(V).state is VModelState.NOT_FOUND
    assert registry.models.get(OLD) is None
    assert registry.models.get(NEW) is None
    assert await kv.get(LAYOUT.model_key(ModelId(OLD))) is None
    assert await kv.get(LAYOUT.model_key(ModelId(NEW))) is None
    assert sorted(local.evicted) == sorted([OLD, NEW])


async def test_delete_vmodel_keeps_models_that_are_not_auto_delete(
    mgmt: Management, kv: MemoryKV, registry: Registry
):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)
    await mgmt.set_vmodel(V, OLD)
    await caught_up(kv, registry)

    await mgmt.delete_vmodel(V)

    assert mgmt.vmodel_status(V).state is VModelState.NOT_FOUND
    assert mgmt.model_status(OLD).state is ModelState.NOT_LOADED


async def test_delete_vmodel_keeps_an_auto_delete_model_another_vmodel_uses(
    mgmt: Management, kv: MemoryKV, registry: Registry
):
    await mgmt.set_vmodel(V, OLD, info=INFO, auto_delete=True)
    await mgmt.set_vmodel("second-vmodel", OLD)
    await caught_up(kv, registry)

    await mgmt.delete_vmodel(V)

    assert registry.models.get(OLD) is not None
    assert mgmt.vmodel_status("second-vmodel").active_model == OLD


async def test_delete_vmodel_with_another_owner_does_nothing(
    mgmt: Management, kv: MemoryKV, registry: Registry
):
    await mgmt.set_vmodel(V, OLD, info=INFO, auto_delete=True, owner="team-a")
    await caught_up(kv, registry)
    revision = kv.revision

    await mgmt.delete_vmodel(V, owner="team-b")

    assert mgmt.vmodel_status(V).state is VModelState.DEFINED
    assert registry.models.get(OLD) is not None
    assert kv.revision == revision


async def test_delete_of_an_unknown_vmodel_is_a_no_op(mgmt: Management, kv: MemoryKV):
    revision = kv.revision

    await mgmt.delete_vmodel("nobody")

    assert kv.revision == revision


async def test_model_is_free_to_unregister_once_its_vmodel_is_deleted(
    mgmt: Management, kv: MemoryKV, registry: Registry
):
    await mgmt.register(OLD, INFO, load_now=False, sync=False)
    await mgmt.set_vmodel(V, OLD)
    await caught_up(kv, registry)
    await mgmt.delete_vmodel(V)
    await caught_up(kv, registry)

    await mgmt.unregister(OLD)

    assert mgmt.model_status(OLD).state is ModelState.NOT_FOUND


async def test_leader_redrives_a_transition_whose_target_load_left_no_trace(
    mgmt: Management, cluster: FakeCluster
):
    await vmodel_on_loaded_old(mgmt)
    cluster.script[NEW] = "lost"
    await mgmt.set_vmodel(V, NEW, info=INFO_NEW)
    await eventually(mgmt.registry, lambda: NEW in cluster.placed, "first attempt")
    await settle()
    assert mgmt.vmodel_status(V).state is VModelState.TRANSITIONING  # stuck without a nudge

    attempts = cluster.placed.count(NEW)
    cluster.script[NEW] = "load"
    mgmt.redrive_transitions()

    await eventually(
        mgmt.registry, lambda: mgmt.vmodel_status(V).state is VModelState.DEFINED, "promoted"
    )
    assert cluster.placed.count(NEW) == attempts + 1
    assert mgmt.vmodel_status(V).active_model == NEW
