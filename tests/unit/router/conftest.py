"""Shared fixtures of the router's unit tests: an in-memory store and a registry mirroring it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mmesh.core.kv import MemoryKV
from mmesh.core.records import KeyLayout
from mmesh.router.registry import Registry


@pytest.fixture
def layout() -> KeyLayout:
    """The registry's key layout; a test module may override it."""
    return KeyLayout("", "test-mesh")


@pytest.fixture
async def kv() -> AsyncIterator[MemoryKV]:
    store = MemoryKV()
    yield store
    await store.close()


@pytest.fixture
async def registry(kv: MemoryKV, layout: KeyLayout) -> AsyncIterator[Registry]:
    reg = Registry(kv, layout)
    await reg.start()
    yield reg
    await reg.stop()
