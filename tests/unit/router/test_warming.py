"""A cold instance warms its model server with a trial load that nothing routes to
(mmesh.router.warmup's choice, mmesh.router.warming's shell on LocalModels over MemoryKV +
Registry and a fake runtime), and never stays cold: nothing to load, or a runtime that never
answers, make it warm."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from mmesh.core.clock import now_ms
from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord
from mmesh.router import warming
from mmesh.router.cache import EvictionPolicy, LocalCache
from mmesh.router.errors import LoadFailed, RuntimeUnavailable
from mmesh.router.loading import LocalModels
from mmesh.router.metrics import RouterMetrics
from mmesh.router.registry import Registry
from mmesh.router.runtime_client import RuntimeClient, RuntimeInfo
from mmesh.router.warming import Warmer
from mmesh.router.warmup import allowed_here, first_allowed, trial_id

HERE = "here"
TRIAL = trial_id(HERE)
SIZE = 64 * 1024
LABELS = ("mt:stub", "rt:stub")


class FakeRuntime:
    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.loaded: list[tuple[str, str]] = []
        """(id loaded, model path)"""
        self.unloaded: list[str] = []
        self.fail = fail or {}
        self.release = asyncio.Event()
        self.release.set()

    async def predict_size(self, model_id: str, *_: str) -> int:
        return SIZE

    async def load(self, model_id: str, _type: str, path: str, _key: str, timeout_s: float) -> int:
        await self.release.wait()
        failure = self.fail.get(path)
        if failure is not None:
            raise failure
        self.loaded.append((model_id, path))
        return SIZE

    async def unload(self, model_id: str, *, timeout_s: float) -> None:
        self.unloaded.append(model_id)


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
        is_live=lambda iid: iid == HERE,
        on_change=lambda: None,
    )


def model(path: str, used_ago_ms: int | None = None, model_type: str = "stub") -> ModelRecord:
    used = 0 if used_ago_ms is None else now_ms() - used_ago_ms
    return ModelRecord(model_type, model_path=path, last_used_ms=used)


async def register(registry: Registry, *models: ModelRecord) -> None:
    for record in models:
        await registry.update_model(record.model_path, lambda _, r=record: r)


async def warm_up(registry: Registry, runtime: FakeRuntime, lost: list[str]) -> LocalModels:
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)
    warmer.begin(lost)
    assert local.cold
    async with asyncio.timeout(5):
        await warmer.wait()
    assert not local.cold
    return local


async def test_a_trial_load_of_a_lost_copy_warms_the_model_server_and_keeps_nothing(
    registry: Registry,
) -> None:
    await register(registry, model("recent", used_ago_ms=1_000), model("lost"))
    runtime = FakeRuntime()

    local = await warm_up(registry, runtime, ["gone-since", "lost"])

    assert runtime.loaded == [(TRIAL, "lost")] and runtime.unloaded == [TRIAL]
    assert local.cache.count == 0 and not local.is_loaded("lost")


async def test_with_no_lost_copy_registered_the_most_recently_used_model_is_tried(
    registry: Registry,
) -> None:
    await register(
        registry,
        model("older", used_ago_ms=60_000),
        model("newest", used_ago_ms=1_000),
        model("onnx", used_ago_ms=10, model_type="mt:onnx"),
    )
    runtime = FakeRuntime()

    await warm_up(registry, runtime, ["deleted"])

    assert runtime.loaded == [(TRIAL, "newest")]


async def test_the_instance_stays_cold_until_the_trial_load_ends(registry: Registry) -> None:
    await register(registry, model("m"))
    runtime = FakeRuntime()
    runtime.release.clear()
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)
    warmer.begin(["m"])
    await asyncio.sleep(0.1)
    assert local.cold

    runtime.release.set()
    async with asyncio.timeout(5):
        await warmer.wait()
    assert not local.cold


async def test_a_new_pod_warms_with_the_most_recently_used_model_it_may_serve(
    registry: Registry,
) -> None:
    """A replaced pod's model server is as cold as a restarted one's."""
    await register(registry, model("older", used_ago_ms=60_000), model("newest", used_ago_ms=10))
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)

    warmer.begin_at_start([])
    assert local.cold
    async with asyncio.timeout(5):
        await warmer.wait()

    assert not local.cold and runtime.loaded == [(TRIAL, "newest")]


async def test_a_new_pod_with_nothing_registered_is_not_held_back(registry: Registry) -> None:
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)

    warmer.begin_at_start([])
    async with asyncio.timeout(5):
        await warmer.wait()

    assert not local.cold and runtime.loaded == []


async def test_nothing_lost_means_not_cold_and_no_load(registry: Registry) -> None:
    await register(registry, model("m", used_ago_ms=1_000))
    runtime = FakeRuntime()
    local = local_models(registry, runtime)

    Warmer(local=local, registry=registry, labels=LABELS).begin([])

    assert not local.cold and runtime.loaded == []


async def test_a_model_the_runtime_refuses_still_warms_it(registry: Registry) -> None:
    await register(registry, model("broken"))
    runtime = FakeRuntime(fail={"broken": LoadFailed("corrupt model file")})

    await warm_up(registry, runtime, ["broken"])

    assert runtime.unloaded == [TRIAL]


async def test_a_runtime_that_never_answers_leaves_the_instance_warm_in_the_end(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warming, "RUNTIME_RETRY_S", 0.01)
    monkeypatch.setattr(warming, "RUNTIME_WAIT_S", 0.2)
    await register(registry, model("m"))
    runtime = FakeRuntime(fail={"m": RuntimeUnavailable("connection refused")})

    await warm_up(registry, runtime, ["m"])

    assert runtime.loaded == []


async def test_a_load_that_ends_here_ends_the_cold_start_even_if_it_fails(
    registry: Registry,
) -> None:
    await register(registry, model("broken"))
    runtime = FakeRuntime(fail={"broken": LoadFailed("corrupt model file")})
    local = local_models(registry, runtime)
    local.cold = True

    with pytest.raises(LoadFailed):
        await local.ensure_loaded("broken", model("broken"))

    assert not local.cold  # the model server judged it: its first load is behind it


async def test_a_load_the_runtime_never_saw_leaves_the_instance_cold(registry: Registry) -> None:
    await register(registry, model("m"))
    runtime = FakeRuntime(fail={"m": RuntimeUnavailable("connection refused")})
    local = local_models(registry, runtime)
    local.cold = True

    with pytest.raises(RuntimeUnavailable):
        await local.ensure_loaded("m", model("m"))

    assert local.cold


async def test_copies_the_runtime_kept_mean_it_is_warm(registry: Registry) -> None:
    await register(registry, model("kept"), model("lost"))
    runtime = FakeRuntime()
    local = local_models(registry, runtime)
    assert local.adopt("kept", SIZE)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)

    warmer.begin(["lost"])
    async with asyncio.timeout(5):
        await warmer.wait()

    assert not local.cold and runtime.loaded == []


async def test_a_load_still_under_way_is_no_sign_of_a_warm_model_server(
    registry: Registry,
) -> None:
    """Loads queued before the runtime turned out to have restarted wait behind its first."""
    await register(registry, model("queued"), model("lost"))
    runtime = FakeRuntime()
    runtime.release.clear()
    local = local_models(registry, runtime)
    queued = asyncio.ensure_future(local.ensure_loaded("queued", model("queued")))
    await asyncio.sleep(0.05)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)

    warmer.begin(["lost"])
    await asyncio.sleep(0.05)
    assert local.cold

    runtime.release.set()
    async with asyncio.timeout(5):
        await queued
        await warmer.wait()
    assert not local.cold


# ---------------------------------------------------------------- the choice (pure)


@pytest.mark.parametrize(
    ("record", "allowed"),
    [
        (ModelRecord("stub"), True),
        (ModelRecord("mt:stub"), True),
        (ModelRecord("mt:onnx"), False),
        (ModelRecord("stub").with_copy_failed(InstanceId(HERE), "corrupt", 1), False),
        (ModelRecord("stub").with_copy_failed(InstanceId("peer"), "corrupt", 1), True),
    ],
    ids=[
        "no labels asked",
        "its labels",
        "another runtime's type",
        "failed here",
        "failed on a peer",
    ],
)
def test_allowed_here(record: ModelRecord, allowed: bool) -> None:
    assert allowed_here(record, me=HERE, labels=LABELS) is allowed


def test_first_allowed_skips_models_gone_and_models_not_allowed() -> None:
    onnx, stub = ModelRecord("mt:onnx"), ModelRecord("stub", model_path="p")
    assert first_allowed([None, onnx, stub], me=HERE, labels=LABELS) is stub
    assert first_allowed([None, onnx], me=HERE, labels=LABELS) is None


def test_a_trial_id_is_no_model_of_the_registry() -> None:
    assert trial_id("pod-a") == "mmesh-warmup__pod-a"


async def test_an_unreachable_runtime_makes_it_cold_until_a_trial_load_gets_through(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model server restarted: the copies it held are not known lost yet, and loads
    sent now would wait behind its first one."""
    monkeypatch.setattr(warming, "RUNTIME_RETRY_S", 0.01)
    await register(registry, model("held"), model("other", used_ago_ms=10))
    runtime = FakeRuntime(fail={"held": RuntimeUnavailable("connection refused")})
    local = local_models(registry, runtime)
    assert local.adopt("held", SIZE)
    warmer = Warmer(local=local, registry=registry, labels=LABELS)

    warmer.runtime_unreachable()
    await asyncio.sleep(0.05)
    assert local.cold  # a copy it holds is no proof of a warm model server here

    del runtime.fail["held"]  # the model server is back
    async with asyncio.timeout(5):
        await warmer.wait()
    assert not local.cold and runtime.loaded == [(TRIAL, "held")]


async def test_a_load_the_runtime_does_not_answer_calls_out(registry: Registry) -> None:
    await register(registry, model("m"))
    runtime = FakeRuntime(fail={"m": RuntimeUnavailable("connection refused")})
    local = local_models(registry, runtime)
    called: list[bool] = []
    local.on_unreachable = lambda: called.append(True)

    with pytest.raises(RuntimeUnavailable):
        await local.ensure_loaded("m", model("m"))

    assert called == [True]
