"""Which runtime scale changes get an Event, and which namespaces cluster scope manages."""

from __future__ import annotations

from typing import Any

from mmesh.operator.handlers.lifecycle import is_enabled_namespace
from mmesh.operator.handlers.runtimes import _scale_change


def deployment(replicas: int) -> dict[str, Any]:
    meta = {"name": "modelmesh-serving-mlserver-1.x", "namespace": "ns"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas}}  # fmt: skip


def test_only_crossing_zero_is_a_scale_event() -> None:
    up = _scale_change(None, deployment(2))
    assert up is not None and (up.before, up.after) == (None, 2)
    down = _scale_change(deployment(2), deployment(0))
    assert down is not None and (down.before, down.after) == (2, 0)
    assert _scale_change(None, deployment(0)) is None  # created idle: nothing happened
    assert _scale_change(deployment(1), deployment(2)) is None  # config change, not news
    assert _scale_change(deployment(0), deployment(0)) is None


def test_enabled_namespaces_are_labelled_and_not_terminating() -> None:
    def ns(labels: dict[str, str], phase: str = "Active") -> dict[str, Any]:
        return {"metadata": {"name": "n", "labels": labels}, "status": {"phase": phase}}

    assert is_enabled_namespace(ns({"modelmesh-enabled": "true"}))
    assert not is_enabled_namespace(ns({"modelmesh-enabled": "false"}))
    assert not is_enabled_namespace(ns({}))
    assert not is_enabled_namespace(ns({"modelmesh-enabled": "true"}, "Terminating"))
    assert not is_enabled_namespace({"metadata": {"name": "n"}})
