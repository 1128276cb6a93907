"""free_port: a listening port no outgoing connection can take before the server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mmesh.local import processes
from mmesh.local.processes import free_port, listen_port_range


def _ephemeral_range() -> tuple[int, int]:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return low, high


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert all(not low <= port <= high for port in ports)
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_bound_by_the_server_it_is_for() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    taken_port, other_port = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", taken_port))
        taken.listen()
        picks = iter([taken_port, taken_port, other_port])
        monkeypatch.setattr(processes.random, "randint", lambda low, high: next(picks))
        monkeypatch.setattr(processes, "_handed_out", set())
        assert free_port() == other_port


def test_the_range_sits_above_the_ephemeral_one_when_there_is_no_room_below(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "range"
    monkeypatch.setattr(processes, "_EPHEMERAL_RANGE", fake)
    fake.write_text("1024\t60999\n")
    assert listen_port_range() == (61000, 65535)
    fake.write_text("32768\t60999\n")
    assert listen_port_range() == (10000, 32767)
