"""The pod runner's deployment decisions: scale, roll, report."""

from __future__ import annotations

from mmesh.local.rollout import PodView, deployment_status, plan_rollout, restart_delay


def pod(name: str, hash_: str = "new", ready: bool = True, started: float = 0.0) -> PodView:
    return PodView(name, hash_, ready, started)


def test_scale_up_from_zero() -> None:
    step = plan_rollout(2, "new", [])
    assert (step.start, step.stop) == (2, ())


def test_steady_state_does_nothing() -> None:
    step = plan_rollout(2, "new", [pod("a"), pod("b")])
    assert (step.start, step.stop) == (0, ())


def test_scale_down_stops_unready_then_newest() -> None:
    pods = [pod("old", started=1), pod("young", started=5), pod("sick", ready=False, started=0)]
    assert plan_rollout(1, "new", pods).stop == ("sick", "young")


def test_a_new_template_starts_new_pods_and_keeps_old_ones_until_ready() -> None:
    old = [pod("a", "old"), pod("b", "old")]
    assert plan_rollout(2, "new", old) == plan_rollout(2, "new", old)
    step = plan_rollout(2, "new", old)
    assert (step.start, step.stop) == (2, ())
    starting = [*old, pod("c", ready=False), pod("d")]
    assert plan_rollout(2, "new", starting).stop == ()
    ready = [*old, pod("c"), pod("d")]
    assert plan_rollout(2, "new", ready).stop == ("a", "b")


def test_scaled_to_zero_stops_everything() -> None:
    step = plan_rollout(0, "new", [pod("a"), pod("b", "old")])
    assert step.start == 0
    assert set(step.stop) == {"a", "b"}


def test_status_counts_ready_and_updated() -> None:
    status = deployment_status(2, "new", [pod("a"), pod("b", "old", ready=False)], generation=3)
    assert status["replicas"] == 2
    assert status["readyReplicas"] == 1
    assert status["availableReplicas"] == 1
    assert status["updatedReplicas"] == 1
    assert status["observedGeneration"] == 3
    assert status["conditions"][0]["status"] == "False"
    full = deployment_status(1, "new", [pod("a")], generation=1)
    assert full["conditions"][0] == {
        "type": "Available",
        "status": "True",
        "reason": "MinimumReplicasAvailable",
    }


def test_restart_backoff_doubles_and_caps() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 20.0
