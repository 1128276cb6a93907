"""`Registrations` (the operator's etcd port) against a real etcd: key layout per scope,
idempotent upserts, vmodel retargeting, owner clashes, deletion and the watch."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.records import InstanceRecord, ModelRecord, Table, VModelRecord
from mmesh.operator.errors import InvalidSpec
from mmesh.operator.registrations import MeshScope, Registrations
from mmesh.operator.resources import InferenceService
from mmesh.operator.translation import Registration, to_registration
from tests.fixtures.etcd import EtcdTestKV

SVC = "modelmesh-serving"


def registration(name: str, path: str, namespace: str = "ns1") -> Registration:
    body = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": path}}},
    }
    return to_registration(InferenceService.from_body(body))


def test_scopes_place_keys_like_the_runtime_pods_see_them() -> None:
    cluster = MeshScope("/root", namespace_scope=False, namespace="ctl")
    assert cluster.root_for("ns1") == "/root/mm_ns/ns1"
    assert cluster.layout("ns1", SVC).base == "/root/mm_ns/ns1/mm/modelmesh-serving/"
    assert cluster.watch_prefix == "/root/mm_ns/"
    key = cluster.layout("ns1", SVC).vmodel_key(VModelId("a"))
    assert cluster.split_key(key) == ("ns1", Table.VMODELS, "a")
    assert cluster.split_key("/root/mm_ns/ns1/mm/svc/leader") is None

    scoped = MeshScope("", namespace_scope=True, namespace="ctl")
    assert scoped.layout("ctl", SVC).base == "mm/modelmesh-serving/"
    assert scoped.watch_prefix == "mm/"
    key = scoped.layout("ctl", SVC).model_key(ModelId("a__isvc-0123456789"))
    assert scoped.split_key(key) == ("ctl", Table.REGISTRY, "a__isvc-0123456789")
    assert MeshScope("", namespace_scope=False).root_for("n") == "/mm_ns/n"


async def test_upsert_retarget_and_delete(etcd_kv: EtcdTestKV) -> None:
    kv, prefix = etcd_kv
    regs = Registrations(kv, MeshScope(prefix))
    layout = regs.scope.layout("ns1", SVC)
    first = registration("m", "s3://b/one")

    created = await regs.upsert(first, SVC)
    assert created == VModelRecord(first.model_id, first.model_id, owner="isvc")
    vkey, mkey = layout.vmodel_key(VModelId("m")), layout.model_key(first.model_id)
    revisions = [(await kv.range_prefix(k))[0][0].mod_revision for k in (vkey, mkey)]
    assert await regs.upsert(first, SVC) == created  # idempotent: no write at all
    assert [(await kv.range_prefix(k))[0][0].mod_revision for k in (vkey, mkey)] == revisions
    record = ModelRecord.from_json((await kv.range_prefix(mkey))[0][0].value)
    assert (record.model_type, record.model_path, record.auto_delete) == ("mt:sklearn", "one", True)

    second = registration("m", "s3://b/two")
    moved = await regs.upsert(second, SVC)
    assert (moved.active_model, moved.target_model) == (first.model_id, second.model_id)

    third = registration("m", "s3://b/three")  # before `second` was promoted: it is dropped
    moved = await regs.upsert(third, SVC)
    assert (moved.active_model, moved.target_model) == (first.model_id, third.model_id)
    assert await kv.get(layout.model_key(second.model_id)) is None
    vmodel, models = await regs.observe("ns1", VModelId("m"), SVC)
    assert vmodel == moved and set(models) == {first.model_id, third.model_id}

    await regs.delete("ns1", VModelId("m"), SVC)
    items, _ = await kv.range_prefix(layout.base)
    assert items == []


async def test_minimum_copies_reach_the_record_and_follow_the_annotation(
    etcd_kv: EtcdTestKV,
) -> None:
    kv, prefix = etcd_kv
    regs = Registrations(kv, MeshScope(prefix))
    reg = replace(registration("m", "s3://b/one"), min_copies=2)
    mkey = regs.scope.layout("ns1", SVC).model_key(reg.model_id)

    async def stored() -> ModelRecord:
        return ModelRecord.from_json((await kv.range_prefix(mkey))[0][0].value)

    await regs.upsert(reg, SVC)
    assert (await stored()).min_copies == 2
    # A router's copy is in the record when the annotation changes: the change keeps it.
    routed = (await stored()).with_copy_loaded(InstanceId("pod-a"), 1)
    await kv.put(mkey, routed.to_json())
    await regs.upsert(replace(reg, min_copies=3), SVC)
    assert await stored() == replace(routed, min_copies=3)
    await regs.upsert(replace(reg, min_copies=0), SVC)  # annotation removed
    assert (await stored()).min_copies == 0


async def test_missing_active_model_switches_at_once(etcd_kv: EtcdTestKV) -> None:
    kv, prefix = etcd_kv
    regs = Registrations(kv, MeshScope(prefix))
    layout = regs.scope.layout("ns1", SVC)
    first = registration("m", "s3://b/one")
    await regs.upsert(first, SVC)
    await kv.delete(layout.model_key(first.model_id))  # e.g. deleted by hand
    second = registration("m", "s3://b/two")
    moved = await regs.upsert(second, SVC)
    assert (moved.active_model, moved.target_model) == (second.model_id, second.model_id)


async def test_foreign_vmodel_is_an_invalid_spec_and_survives_delete(
    etcd_kv: EtcdTestKV,
) -> None:
    kv, prefix = etcd_kv
    regs = Registrations(kv, MeshScope(prefix))
    layout = regs.scope.layout("ns1", SVC)
    theirs = VModelRecord(ModelId("other"), ModelId("other"), owner="ksp")
    await kv.put(layout.vmodel_key(VModelId("m")), theirs.to_json())
    with pytest.raises(InvalidSpec, match="different source"):
        await regs.upsert(registration("m", "s3://b/one"), SVC)
    await regs.delete("ns1", VModelId("m"), SVC)
    assert await kv.get(layout.vmodel_key(VModelId("m"))) is not None


async def test_watch_names_the_inference_service_and_tracks_instances(
    etcd_kv: EtcdTestKV,
) -> None:
    kv, prefix = etcd_kv
    regs = Registrations(kv, MeshScope(prefix))
    layout = regs.scope.layout("ns1", SVC)
    seen: asyncio.Queue[tuple[str | None, str | None]] = asyncio.Queue()
    task = asyncio.create_task(regs.watch(lambda ns, name: seen.put_nowait((ns, name))))
    try:
        assert await asyncio.wait_for(seen.get(), 5) == (None, None)  # initial sync
        await regs.upsert(registration("m", "s3://b/one"), SVC)
        assert await asyncio.wait_for(seen.get(), 5) == ("ns1", "m")  # the model record
        assert await asyncio.wait_for(seen.get(), 5) == ("ns1", "m")  # the vmodel
        assert not regs.has_instance_for("ns1", SVC, {"mt:sklearn"})
        instance = InstanceRecord(labels=("mt:sklearn", "rt:mlserver-1.x"))
        await kv.put(layout.instance_key(InstanceId("pod-a")), instance.to_json())
        assert await asyncio.wait_for(seen.get(), 5) == ("ns1", None)
        assert regs.has_instance_for("ns1", SVC, {"mt:sklearn"})
        assert not regs.has_instance_for("ns1", SVC, {"mt:onnx"})
        await kv.put(layout.instance_key(InstanceId("pod-a")), instance.to_json())
        await kv.delete(layout.instance_key(InstanceId("pod-a")))  # the same PUT is no news
        assert await asyncio.wait_for(seen.get(), 5) == ("ns1", None)
        assert not regs.has_instance_for("ns1", SVC, {"mt:sklearn"})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
