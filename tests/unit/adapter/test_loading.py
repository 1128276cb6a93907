"""ModelLoader with in-memory fakes of the puller and the backend (no files, no servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mmesh.adapter.backends.backend import PreparedModel
from mmesh.adapter.errors import InvalidModelRequest, LoadTimeout, ModelLoadFailed
from mmesh.adapter.loading import ModelLoader, SizingPolicy
from mmesh.adapter.puller import PulledModel
from mmesh.adapter.storage.spec import ModelKey


class FakePuller:
    def __init__(self, *, disk_size: int = 1000, delay_s: float = 0.0) -> None:
        self.disk_size = disk_size
        self.delay_s = delay_s
        self.present: set[str] = set()
        self.events: list[str] = []

    async def pull(self, model_id: str, model_path: str, key: ModelKey) -> PulledModel:
        self.events.append(f"pull-start {model_id}")
        await asyncio.sleep(self.delay_s)
        self.present.add(model_id)
        self.events.append(f"pull-end {model_id}")
        return PulledModel(Path("/models") / model_id / "m", self.disk_size, None)

    async def remove(self, model_id: str) -> None:
        self.present.discard(model_id)
        self.events.append(f"remove {model_id}")

    async def purge(self) -> None:
        self.present.clear()


class FakeBackend:
    def __init__(self, *, fail: str | None = None) -> None:
        self.fail = fail
        self.loaded: set[str] = set()
        self.prepared: list[PreparedModel] = []

    async def ready_version(self) -> str | None:
        return "fake-1"

    async def purge(self) -> None:
        self.loaded.clear()

    async def load(self, model: PreparedModel) -> None:
        self.prepared.append(model)
        if self.fail:
            raise ModelLoadFailed(self.fail)
        self.loaded.add(model.model_id)

    async def unload(self, model_id: str) -> None:
        self.loaded.discard(model_id)

    async def close(self) -> None:
        return None


def make_loader(puller: FakePuller, backend: FakeBackend, timeout_s: float = 5.0) -> ModelLoader:
    return ModelLoader(
        puller=puller,
        backend=backend,  # type: ignore[arg-type]
        sizing=SizingPolicy(1.25, 777),
        load_timeout_s=timeout_s,
    )


async def test_load_reports_disk_size_times_multiplier_and_format() -> None:
    puller, backend = FakePuller(disk_size=4000), FakeBackend()
    loader = make_loader(puller, backend)
    size = await loader.load("m1", "mt:sklearn", "sklearn/m.joblib", '{"storage_key": "k"}')
    assert size == 5000
    assert loader.loaded_size("m1") == 5000
    assert backend.prepared[0].model_format == "sklearn"
    assert backend.loaded == {"m1"}


async def test_failed_load_leaves_no_files_and_no_model() -> None:
    puller, backend = FakePuller(), FakeBackend(fail="bad pickle")
    loader = make_loader(puller, backend)
    with pytest.raises(ModelLoadFailed, match="bad pickle"):
        await loader.load("m1", "sklearn", "p", "")
    assert puller.present == set()
    assert loader.loaded_size("m1") is None


async def test_load_timeout_names_the_limit_and_cleans_up() -> None:
    puller, backend = FakePuller(delay_s=1.0), FakeBackend()
    loader = make_loader(puller, backend, timeout_s=0.05)
    with pytest.raises(LoadTimeout, match="timed out after 50 ms"):
        await loader.load("m1", "sklearn", "p", "")
    assert puller.present == set() and backend.loaded == set()


async def test_cancelled_load_cleans_up() -> None:
    puller, backend = FakePuller(delay_s=1.0), FakeBackend()
    loader = make_loader(puller, backend)
    task = asyncio.create_task(loader.load("m1", "sklearn", "p", ""))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert puller.present == set() and backend.loaded == set()


async def test_operations_on_one_id_never_overlap() -> None:
    puller, backend = FakePuller(delay_s=0.05), FakeBackend()
    loader = make_loader(puller, backend)
    await asyncio.gather(
        loader.load("m1", "sklearn", "p", ""),
        loader.unload("m1"),
        loader.load("m1", "sklearn", "p", ""),
    )
    starts_and_ends = [e for e in puller.events if e.startswith("pull")]
    assert starts_and_ends == ["pull-start m1", "pull-end m1"] * 2
    assert backend.loaded == {"m1"}


async def test_different_ids_load_in_parallel() -> None:
    puller, backend = FakePuller(delay_s=0.2), FakeBackend()
    loader = make_loader(puller, backend)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(loader.load(f"m{i}", "sklearn", "p", "") for i in range(5)))
    assert loop.time() - started < 0.6
    assert backend.loaded == {f"m{i}" for i in range(5)}


@pytest.mark.parametrize(
    "bad_id", ["", "..", "a/b", "_mlserver_models", ".mmesh-models", "nul\x00", "x" * 256]
)
async def test_bad_model_ids_are_rejected_before_any_work(bad_id: str) -> None:
    puller, backend = FakePuller(), FakeBackend()
    loader = make_loader(puller, backend)
    with pytest.raises(InvalidModelRequest):
        await loader.load(bad_id, "sklearn", "p", "")
    assert puller.events == []


async def test_missing_model_type_is_rejected() -> None:
    loader = make_loader(FakePuller(), FakeBackend())
    with pytest.raises(InvalidModelRequest, match="has no model type"):
        await loader.load("m1", "", "p", "")


def test_predicted_size_uses_disk_size_from_model_key_or_default() -> None:
    loader = make_loader(FakePuller(), FakeBackend())
    assert loader.predicted_size('{"disk_size_bytes": 800}') == 1000
    assert loader.predicted_size("") == 777
