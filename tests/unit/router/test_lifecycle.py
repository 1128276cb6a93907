"""Readiness of a router: a new pod waits for a draining peer, a serving one never does."""

from __future__ import annotations

from mmesh.router.app import Lifecycle


def test_a_new_pod_is_not_ready_while_another_drains() -> None:
    life = Lifecycle(ready=True)
    assert life.readiness(other_draining=True) is False
    assert life.readiness(other_draining=False) is True


def test_a_pod_that_was_ready_stays_ready_while_a_peer_drains() -> None:
    """A deleted pod's drain must not take the last serving pod out of the Service."""
    life = Lifecycle(ready=True)
    assert life.readiness(other_draining=False) is True
    assert life.readiness(other_draining=True) is True


def test_not_ready_before_start_or_once_shutting_down() -> None:
    life = Lifecycle()
    assert life.readiness(other_draining=False) is False
    life.ready = True
    assert life.readiness(other_draining=False) is True
    life.shutting_down = True
    assert life.readiness(other_draining=False) is False
