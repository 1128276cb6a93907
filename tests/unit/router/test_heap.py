"""MM_KEEP_PAYLOAD_BUFFERS: freed payload buffers are reused, not fresh pages each time.

Counted as the page faults a process takes while it makes and frees 1 MiB buffers the way a
forwarded request does; each case runs in a process of its own, since the thresholds are
process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROUNDS = 100
CHURN = f"""
import os, resource, sys
from mmesh.router.heap import keep_payload_buffers
if sys.argv[1] == "kept":
    assert keep_payload_buffers() is None
blob = os.urandom(1 << 20)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range({ROUNDS}):
    request = bytearray(blob)
    forwarded = bytes(request)
    answer = forwarded + b"!"
    del request, forwarded, answer
print((faults() - before) / {ROUNDS})
"""


def faults_per_request(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return float(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_buffers_take_a_tiny_fraction_of_the_page_faults() -> None:
    fresh, kept = faults_per_request("fresh"), faults_per_request("kept")
    assert fresh > 200  # ~3 MiB of new pages per request: the default behaviour this fixes
    assert kept < fresh / 10
