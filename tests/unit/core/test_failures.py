"""The failure-expiry rule (mmesh.core.failures): a load failure counts for `expiry_ms`."""

from __future__ import annotations

import pytest

from mmesh.core.failures import failed_instances, is_live
from mmesh.core.ids import InstanceId
from mmesh.core.records import ModelRecord

NOW = 1_700_000_000_000
EXPIRY = 900_000


@pytest.mark.parametrize(
    ("age_ms", "live"),
    [(0, True), (EXPIRY - 1, True), (EXPIRY, False), (EXPIRY + 1, False), (-5, True)],
)
def test_a_failure_is_live_until_the_expiry_has_passed(age_ms: int, live: bool) -> None:
    assert is_live(NOW - age_ms, now_ms=NOW, expiry_ms=EXPIRY) is live


def test_failed_instances_are_those_whose_failure_has_not_expired() -> None:
    failed = {"old": NOW - EXPIRY, "new": NOW - EXPIRY + 1}
    record = ModelRecord(
        model_type="stub",
        failed_in={InstanceId(i): at for i, at in failed.items()},
        failures={InstanceId(i): f"boom on {i}" for i in failed},
    )
    assert failed_instances(record, now_ms=NOW, expiry_ms=EXPIRY) == {"new"}
