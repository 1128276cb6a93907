"""Local processes of the local cluster: started in their own process group, logged to a file,
stopped by pid (SIGTERM, then SIGKILL after a grace period).

I/O, stdlib only. The one home of the process helpers: the local cluster uses the async
`stop`; the benchmarks (bench/) and the integration fixtures (tests/fixtures) use the
blocking `free_port`, `port_open`, `http_ok`, `wait_ready` and `stop_blocking`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LISTEN_PORTS_LOW = 10000
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, outside the kernel's ephemeral range.

    A port from bind(0) comes from the ephemeral range, which every outgoing connection also
    draws from: between this call and the server's bind, some client socket can take it (CI
    saw "address already in use" that way). Below the range only listeners bind, and each one
    this process hands out is never handed out again.
    """
    low, high = listen_port_range()
    for _ in range(500):
        port = random.randint(low, high)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listen_port_range() -> tuple[int, int]:
    """Ports outside the ephemeral range: below it where there is room, else above it."""
    try:
        ephemeral_low, ephemeral_high = map(int, _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        ephemeral_low, ephemeral_high = 32768, 60999
    if ephemeral_low - _LISTEN_PORTS_LOW >= 2000:
        return _LISTEN_PORTS_LOW, ephemeral_low - 1
    return ephemeral_high + 1, 65535


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Whether `url` answers 2xx; raises while nothing listens (urlopen raises on 4xx/5xx)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return bool(200 <= response.status < 300)


def wait_ready(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `check` until it is true; fail early if `proc` exits, with the tail of `log`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before it was ready:\n{_tail(log)}"
            )
        with contextlib.suppress(Exception):  # not up yet: keep polling until the deadline
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout_s}s:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log_tail(log, 3000) if log is not None else ""


def start(
    argv: Sequence[str | os.PathLike[str]],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def signal_one(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process alone, not the others of its group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


def stop_blocking(
    proc: subprocess.Popen[bytes], grace_s: float, *, group: bool = True
) -> int | None:
    """`stop` for synchronous callers: SIGTERM, wait up to `grace_s`, then SIGKILL; the exit
    code. `group=False` signals the process alone, not the others of its group."""
    send = signal_group if group else signal_one
    send(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        send(proc, signal.SIGKILL)
        proc.wait(timeout=5)
    return proc.poll()


async def stop(proc: subprocess.Popen[bytes], grace_s: float) -> int | None:
    """SIGTERM the process group, wait up to `grace_s`, then SIGKILL; the exit code."""
    signal_group(proc, signal.SIGTERM)
    if not await wait_exit(proc, grace_s):
        signal_group(proc, signal.SIGKILL)
        await wait_exit(proc, 5.0)
    return proc.poll()


async def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while proc.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def log_tail(log: Path, size: int = 2000) -> str:
    try:
        return log.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""
