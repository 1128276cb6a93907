"""PayloadSinks in-process against real sockets: a sink that is down is put on hold instead of
costing a failing connection per payload, and comes back after the hold."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from mmesh.router import payloadsink
from mmesh.router.payloads import Payload, parse_processors
from tests.fixtures.procs import free_port


def payload(n: int) -> Payload:
    return Payload(f"p-{n}", "m", "", "/inference.GRPCInferenceService/ModelInfer", "request", b"x")


async def test_a_down_sink_is_held_then_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(payloadsink, "HOLD_S", 0.5)
    port = free_port()
    (processor,), _ = parse_processors(f"http://127.0.0.1:{port}/sink")
    registry = CollectorRegistry()
    dropped = Counter("dropped", "d", registry=registry)
    failed = Counter("failed", "f", registry=registry)
    sinks = payloadsink.PayloadSinks(
        [processor], capacity=64, workers=2, dropped=dropped, failed=failed
    )
    sinks.start()
    received: list[str] = []
    try:
        with caplog.at_level(logging.WARNING, logger="mmesh.router.payloadsink"):
            for n in range(40):  # nothing listens on the port yet
                sinks.offer(payload(n))
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
            assert failed._value.get() <= 4  # the first sends fail, then the sink is held
            assert dropped._value.get() >= 30
            holds = [r for r in caplog.records if "holding its payloads" in r.getMessage()]
            assert 1 <= len(holds) <= 2

            async def sink(request: web.Request) -> web.Response:
                received.append(json.loads(await request.read())["id"])
                return web.Response()

            app = web.Application()
            app.router.add_post("/sink", sink)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await asyncio.sleep(0.6)  # the hold ends
            sinks.offer(payload(100))
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.05)
            await runner.cleanup()
    finally:
        await sinks.close()
    assert received == ["p-100"]
