"""Processes for the benchmark: start on 127.0.0.1, wait until ready, stop by pid.

Every server the benchmark starts runs as its own process in its own session (so a
Ctrl-C in the terminal reaches only the orchestrator, which then stops them in order),
with its output in a log file under the run's temp dir. `Processes.stop_all` sends
SIGTERM to each pid it started (newest first), waits, then SIGKILLs what is left.
The port, probe and stop helpers are mmesh.local.processes's, shared with the local
cluster and the test fixtures.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmesh.local import processes

CLK_TCK = os.sysconf("SC_CLK_TCK")


def http_text(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return str(resp.read().decode())


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields), fields[3]


def wait_quiet(*, min_idle: float, window_s: float, max_wait_s: float) -> float:
    """Wait until the machine is at least `min_idle` idle over one window (bench-ref's
    quiet.sh, shorter); give up after `max_wait_s`. Returns the last idle fraction seen."""
    deadline = time.monotonic() + max_wait_s
    idle = 0.0
    while True:
        total0, idle0 = _cpu_times()
        time.sleep(window_s)
        total1, idle1 = _cpu_times()
        idle = (idle1 - idle0) / max(1, total1 - total0)
        if idle >= min_idle or time.monotonic() >= deadline:
            return idle


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Processes:
    """The servers of one benchmark run, stopped together (newest first)."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(c) for c in cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        processes.wait_ready(
            check, timeout_s=timeout_s, what=proc.name, proc=proc.popen, log=proc.log
        )

    def stop_all(self, timeout_s: float = 10.0) -> None:
        for proc in reversed(self.procs):
            stop_one(proc, timeout_s)
        self.procs.clear()


def stop_one(proc: Proc, timeout_s: float) -> None:
    """SIGTERM this one pid (not its group), then SIGKILL it if it has not exited in time."""
    processes.stop_blocking(proc.popen, timeout_s, group=False)
