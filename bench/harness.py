"""What every benchmark shares: paths, log and goal rows, the environment record, the
router hooks, the goals table, signals and the end of `main()`.

Used by run.py (G1-G5), mesh.py (G6-G10) and overcommit.py. Each benchmark keeps its own
measurements and its own raw-number tables; this module owns how a run starts (Ctrl-C and
SIGTERM stop every process it started), what it records about the machine and the code,
how goals are printed, and how it ends (results file, verdict line, exit code 130 when
interrupted).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import grpc
from procs import Proc, Processes

from mmesh.local.processes import http_ok

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REF = Path(os.environ.get("MMBENCH_REF_DIR", ROOT.parent / "shared" / "bench-ref")).resolve()
PY = sys.executable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- goals


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("inf")


def goal(name: str, value: float, target: str, ok: bool, **extra: Any) -> dict[str, Any]:
    return {"goal": name, "value": value, "target": target, "pass": bool(ok), **extra}


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


GOAL_KEYS = frozenset({"goal", "value", "target", "pass", "per_rep"})
"""Keys of a goal row shown in its own columns; the others are printed as notes."""


def goal_lines(
    goals: Sequence[Mapping[str, Any]],
    *,
    widths: tuple[int, int, int],
    rule: int,
    indent: int = 6,
    per_rep: str = "per round",
    hidden: Collection[str] = GOAL_KEYS,
) -> list[str]:
    """The goals table: header, rule, one line per goal (name, measured, target, verdict),
    then its per-repetition values and its notes indented below it. `widths`: of the name,
    measured and target columns."""
    name_w, value_w, target_w = widths
    lines = [f"{'goal':{name_w}} {'measured':>{value_w}}  {'target':<{target_w}} result"]
    lines.append("-" * rule)
    for g in goals:
        verdict = "PASS" if g["pass"] else "FAIL"
        lines.append(
            f"{g['goal']:{name_w}} {fmt(g['value']):>{value_w}}  {g['target']:<{target_w}}"
            f" {verdict}"
        )
        if "per_rep" in g:
            lines.append(f"{'':{indent}}{per_rep}: {', '.join(fmt(x) for x in g['per_rep'])}")
        notes = [f"{k}={fmt(v)}" for k, v in g.items() if k not in hidden and v != []]
        if notes:
            lines.append(f"{'':{indent}}{', '.join(notes)}")
    return lines


# --------------------------------------------------------------------------- environment


def git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def environment(config: Any | None, **extra: Any) -> dict[str, Any]:
    """The code, machine and settings of a run (`config`: a dataclass, or None to leave it
    out); `extra` keys follow the config."""
    return {
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty_mmesh": git("status", "--porcelain", "--", "mmesh").splitlines(),
        **({"config": asdict(config)} if config is not None else {}),
        **extra,
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "bench_ref": str(REF),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- servers


def start_etcd(
    procs: Processes,
    name: str,
    data_dir: Path,
    ports: tuple[int, int],
    *,
    flags: Sequence[str] = (),
) -> Proc:
    """A one-member etcd on 127.0.0.1 (`ports`: client, peer), ready when it answers
    /health; `flags` are added to its command line."""
    client, peer = (f"http://127.0.0.1:{port}" for port in ports)
    cmd = [
        "/usr/bin/etcd",
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        "--auto-compaction-retention=1",
        *flags,
        "--log-level=error",
        "--logger=zap",
    ]
    proc = procs.start("etcd", cmd)
    procs.wait_ready(proc, lambda: http_ok(f"{client}/health"), timeout_s=20)
    return proc


def install_hooks(hook_dir: Path, ports: Mapping[str, int]) -> dict[str, str]:
    """Put `<name>_hook.py` for each of `ports` (with statserver.py, which serves their
    numbers) and a `sitecustomize.py` importing them into `hook_dir`; the environment
    that makes a router load them at start-up and serve hook `<name>` on its port."""
    hook_dir.mkdir(exist_ok=True)
    shutil.copy(BENCH / "statserver.py", hook_dir / "statserver.py")
    env = {"PYTHONPATH": str(hook_dir)}
    for hook, port in ports.items():
        shutil.copy(BENCH / f"{hook}_hook.py", hook_dir / f"{hook}_hook.py")
        env[f"MMBENCH_{hook.upper()}_PORT"] = str(port)
    imports = "".join(f"import {hook}_hook  # noqa: F401\n" for hook in ports)
    (hook_dir / "sitecustomize.py").write_text(imports)
    return env


# --------------------------------------------------------------------------- main


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_signals() -> None:
    """SIGTERM and SIGINT unwind like Ctrl-C, so every process the run started is stopped."""
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored


def require_bench_ref() -> None:
    if not (REF / "proxy.py").exists():
        sys.exit(f"bench-ref not found at {REF} (set MMBENCH_REF_DIR)")


def write_results(results: Mapping[str, Any], out: Path) -> None:
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")


def finish(
    results: dict[str, Any], out: Path, started: float, report: Callable[[dict[str, Any]], None]
) -> None:
    """The end of a goals run: its wall time (since monotonic `started`), the results file,
    the benchmark's `report`, then which code was measured and how many goals pass."""
    results["wall_s"] = round(time.monotonic() - started, 1)
    write_results(results, out)
    report(results)
    print_verdict(results, out)


def print_verdict(results: Mapping[str, Any], out: Path) -> None:
    failed = [g["goal"] for g in results["goals"] if not g["pass"]]
    env = results["environment"]
    dirty = " + uncommitted changes under mmesh/" if env["git_dirty_mmesh"] else ""
    print(f"\nrouter code: {env['git_head'][:12]}{dirty}")
    print(
        f"{len(results['goals']) - len(failed)}/{len(results['goals'])} goals pass;"
        f" wall {results['wall_s']} s; results in {out}"
    )


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's `main`; an interrupt (Ctrl-C, SIGTERM) exits with 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted ({str(exc) or 'Ctrl-C'}); every process this run started is stopped")
        sys.exit(130)
