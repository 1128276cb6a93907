"""The janitor (mmesh.router.janitor) on MemoryKV + Registry with a fake inference path:
scale-up from request rates, the leader's election, reaping, minimum copies and gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId, ModelId
from mmesh.core.kv import Lease, MemoryKV
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord
from mmesh.router.janitor import Janitor, JanitorPolicy, Leadership, Survey
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry
from mmesh.router.usage import Usage

LAYOUT = KeyLayout("mm/", "svc")
ME = "a"
POLICY = JanitorPolicy(
    rate_interval_s=6.0,
    scaleup_rpm=100,
    reap_grace_s=0.0,
    second_copy_age_s=3600.0,
    second_copy_gap_s=60.0,
    failure_expiry_ms=900_000,
)


class FakeRouter:
    """Records the copies the janitor asks for; the live instances are the registry's."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.asked: list[tuple[str, bool]] = []
        info = SimpleNamespace(default_model_size_bytes=8192 * 10)
        self.local = cast(LocalModels, SimpleNamespace(info=info))

    def live_peers(self) -> dict[str, InstanceRecord]:
        live = {iid: v.record for iid, v in self.registry.instances.items.items()}
        live.setdefault(ME, InstanceRecord())
        return live

    async def ensure_copy(self, model_id: str, record: ModelRecord, *, extra: bool = False) -> str:
        self.asked.append((model_id, extra))
        return "b"


@pytest.fixture
def layout() -> KeyLayout:
    return LAYOUT


@pytest.fixture
def router(registry: Registry) -> FakeRouter:
    return FakeRouter(registry)


def make_janitor(
    registry: Registry, router: FakeRouter, usage: Usage, lease: Lease | None = None
) -> Janitor:
    return Janitor(
        registry=registry,
        router=router,
        usage=usage,
        metrics=RouterMetrics(),
        instance_id=ME,
        policy=POLICY,
        lease=lambda: lease,
        leadership=Leadership(),
        duties=(),
    )


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


async def put_instance(kv: MemoryKV, registry: Registry, iid: str, **fields: Any) -> None:
    await kv.put(LAYOUT.instance_key(InstanceId(iid)), InstanceRecord(**fields).to_json())
    await eventually(
        registry, lambda: registry.instances.get(iid) is not None, f"{iid} is in the mirror"
    )


async def put_model(kv: MemoryKV, registry: Registry, model_id: str, rec: ModelRecord) -> None:
    await kv.put(LAYOUT.model_key(ModelId(model_id)), rec.to_json())
    await eventually(
        registry, lambda: registry.models.get(model_id) == rec, f"{model_id} is in the mirror"
    )


def held_by(*iids: str, **extra: Any) -> ModelRecord:
    at = now_ms()
    return ModelRecord(
        model_type="stub",
        instance_ids={InstanceId(i): at for i in iids},
        loaded_in={InstanceId(i): at for i in iids},
        **extra,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def busy(janitor: Janitor, usage: Usage) -> None:
    """50 requests for "m" in one rate window (500 req/min), then the janitor's rate check."""
    for _ in range(50):
        usage.count("m")
    janitor.check_rates()
    await settle()


# --- rates and scale-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "holders", "want"),
    [
        (11, (ME,), [("m", True)]),
        (10, (ME,), []),
        (11, ("0", ME), []),
    ],
    ids=["busy: one more copy", "at the threshold: none", "another holder decides"],
)
async def test_a_busy_model_gets_one_more_copy_from_its_first_holder(
    kv: MemoryKV,
    registry: Registry,
    router: FakeRouter,
    requests: int,
    holders: tuple[str, ...],
    want: list[tuple[str, bool]],
) -> None:
    for iid in ("0", "b"):
        await put_instance(kv, registry, iid)
    await put_model(kv, registry, "m", held_by(*holders))
    usage = Usage()
    janitor = make_janitor(registry, router, usage)
    for _ in range(requests):  # 6 s window: 11 requests are 110 req/min, over 100
        usage.count("m")
    janitor.check_rates()
    await settle()
    assert router.asked == want
    assert usage.rpm == requests * 10


async def test_no_copy_is_added_when_every_other_instance_shuts_down(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    await put_instance(kv, registry, "b", shutting_down=True)
    await put_model(kv, registry, "m", held_by(ME))
    usage = Usage()
    janitor = make_janitor(registry, router, usage)
    await busy(janitor, usage)
    assert router.asked == []


async def test_no_copy_is_added_when_the_other_instances_lack_the_models_labels(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    """Pods of another runtime are no room for a copy (they would refuse it every time)."""
    await put_instance(kv, registry, "b", labels=["mt:onnx", "rt:triton-2.x"])
    await put_model(kv, registry, "m", replace(held_by(ME), model_type="mt:sklearn"))
    usage = Usage()
    janitor = make_janitor(registry, router, usage)
    await busy(janitor, usage)
    assert router.asked == []
    await put_instance(kv, registry, "c", labels=["mt:sklearn", "rt:mlserver-1.x"])
    await busy(janitor, usage)
    assert router.asked == [("m", True)]


# --- the leader -------------------------------------------------------------------------


async def test_the_first_instance_with_a_lease_becomes_leader_and_others_not(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    lease = await kv.grant_lease(30)
    first = make_janitor(registry, router, Usage(), lease)
    await first.elect()
    second = Janitor(
        registry=registry,
        router=router,
        usage=Usage(),
        metrics=RouterMetrics(),
        instance_id="b",
        policy=POLICY,
        lease=lambda: lease,
        leadership=Leadership(),
        duties=(),
    )
    await second.elect()
    assert (first.is_leader, second.is_leader) == (True, False)


async def test_a_leader_reads_the_key_again_only_once_its_lease_changed(
    kv: MemoryKV, registry: Registry, router: FakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    leases = [await kv.grant_lease(30)]
    janitor = make_janitor(registry, router, Usage())
    janitor._lease = lambda: leases[-1]
    await janitor.elect()
    reads: list[str] = []
    real_get = kv.get

    async def counted_get(key: str) -> object:
        reads.append(key)
        return await real_get(key)

    monkeypatch.setattr(kv, "get", counted_get)
    for _ in range(3):
        await janitor.elect()
    assert janitor.is_leader and reads == []  # the key lives as long as this lease

    await leases[0].revoke()  # the lease expired: the key went with it
    leases.append(await kv.grant_lease(30))
    await janitor.elect()
    assert janitor.is_leader and reads  # elected again, under the new lease


async def test_without_a_lease_nobody_leads(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    janitor = make_janitor(registry, router, Usage(), None)
    await janitor.elect()
    assert not janitor.is_leader


async def test_the_leader_drops_the_copies_of_a_departed_instance(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    await put_instance(kv, registry, "b")
    await put_model(kv, registry, "m", held_by("b", "gone"))
    janitor = make_janitor(registry, router, Usage())
    survey = await janitor.survey()
    await janitor.reap(survey)
    await eventually(
        registry,
        lambda: set(cast(ModelRecord, registry.models.get("m")).instance_ids) == {"b"},
        "the departed instance's copy is dropped",
    )


async def test_minimum_copies_are_topped_up_no_further_than_serving_instances(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    await put_instance(kv, registry, "b")
    await put_instance(kv, registry, "c", shutting_down=True)
    await put_model(kv, registry, "short", held_by("b", min_copies=3))
    await put_model(kv, registry, "enough", held_by("b", ME, min_copies=3))
    janitor = make_janitor(registry, router, Usage())
    janitor.ensure_min_copies(await janitor.survey())
    await settle()
    assert router.asked == [("short", True)]


async def test_the_cluster_gauges_count_managed_loaded_and_failed_models(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    failed = ModelRecord(
        model_type="stub",
        failed_in={InstanceId("b"): now_ms()},
        failures={InstanceId("b"): "boom"},
    )
    await put_instance(kv, registry, "b")
    await put_model(kv, registry, "loaded", held_by("b"))
    await put_model(kv, registry, "failed", failed)
    await put_model(kv, registry, "nowhere", ModelRecord(model_type="stub"))
    janitor = make_janitor(registry, router, Usage())
    janitor.publish_gauges(await janitor.survey())
    scrape = janitor.metrics.registry.get_sample_value
    assert scrape("modelmesh_models_managed_total") == 3
    assert scrape("modelmesh_models_loaded_total") == 1
    assert scrape("modelmesh_models_with_failure_total") == 1


@pytest.mark.parametrize(("has_lease", "want"), [(True, [True]), (False, [])])
async def test_leader_only_duties_run_once_this_instance_won_the_election(
    kv: MemoryKV, registry: Registry, router: FakeRouter, has_lease: bool, want: list[bool]
) -> None:
    lease = await kv.grant_lease(30) if has_lease else None
    leadership = Leadership()
    ran: list[bool] = []
    janitor = Janitor(
        registry=registry,
        router=router,
        usage=Usage(),
        metrics=RouterMetrics(),
        instance_id=ME,
        policy=POLICY,
        lease=lambda: lease,
        leadership=leadership,
        duties=(lambda: ran.append(leadership()),),
    )
    await janitor.leader_duties()
    assert ran == want


# --- loading into free space ------------------------------------------------------------


async def test_recent_models_load_into_free_space_only_on_pods_that_fit_them(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    """Free space on another runtime's pods is no reason to load: the copy would land on
    the model's own (full) pods and evict something there."""
    await put_model(kv, registry, "m", ModelRecord(model_type="mt:sklearn", last_used_ms=now_ms()))
    janitor = make_janitor(registry, router, Usage())
    roomy = {"capacity_units": 1000, "used_units": 0}
    other = InstanceRecord(labels=["mt:onnx"], **roomy)
    full = InstanceRecord(labels=["mt:sklearn"], capacity_units=1000, used_units=1000)
    survey = Survey(live={"b": other, "c": full}, recent_unloaded=[(now_ms(), "m")])
    janitor.load_proactively(survey)
    await settle()
    assert router.asked == []
    survey.live["d"] = InstanceRecord(labels=["mt:sklearn"], **roomy)
    janitor.load_proactively(survey)
    await settle()
    assert router.asked == [("m", True)]


async def test_free_space_on_a_cold_pod_is_no_reason_to_load(
    kv: MemoryKV, registry: Registry, router: FakeRouter
) -> None:
    """A cold pod warms itself with such a model; the leader's load would go to a warm pod
    (placement ranks cold ones last) and evict there."""
    await put_model(kv, registry, "m", ModelRecord(model_type="mt:sklearn", last_used_ms=now_ms()))
    janitor = make_janitor(registry, router, Usage())
    cold = InstanceRecord(labels=["mt:sklearn"], capacity_units=1000, cold=True)
    full = InstanceRecord(labels=["mt:sklearn"], capacity_units=1000, used_units=1000)
    survey = Survey(live={"b": cold, "c": full}, recent_unloaded=[(now_ms(), "m")])
    janitor.load_proactively(survey)
    await settle()
    assert router.asked == []
    survey.live["b"] = InstanceRecord(labels=["mt:sklearn"], capacity_units=1000)
    janitor.load_proactively(survey)
    await settle()
    assert router.asked == [("m", True)]
