"""The request-path histograms expose what prometheus_client's Histogram exposes for the same
observations (its `_created` series aside), with and without labels."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from mmesh.router.loophist import LoopHistogram

VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 4.99, 5.0, 7.0, 1e9)


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


@pytest.mark.parametrize("labelnames", [(), ("method", "code")])
def test_same_exposition_as_prometheus_client(labelnames: tuple[str, ...]) -> None:
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("t_ms", "doc", labelnames, buckets=(1, 2, 5), registry=theirs_registry)
    ours = LoopHistogram("t_ms", "doc", labelnames, buckets=(1, 2, 5), registry=ours_registry)
    for i, value in enumerate(VALUES):
        labels = ("Infer", "OK" if i % 3 else "NOT_FOUND")[: len(labelnames)]
        theirs.labels(*labels).observe(value) if labels else theirs.observe(value)
        ours.labels(*labels).observe(value)
    assert exposition(ours_registry) == exposition(theirs_registry)


def test_an_unlabelled_histogram_is_exposed_before_its_first_observation() -> None:
    registry = CollectorRegistry()
    LoopHistogram("idle_ms", "doc", (), buckets=(1,), registry=registry)
    assert "idle_ms_count 0.0" in exposition(registry)


def test_wrong_label_count_is_refused() -> None:
    histogram = LoopHistogram("l_ms", "doc", ("a",), buckets=(1,), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="l_ms"):
        histogram.labels("x", "y")
