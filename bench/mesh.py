"""mmesh mesh benchmark: goals G6-G10 of shared/reference/performance.md, each measured
in one run against a baseline the same run measures.

    .venv/bin/python bench/mesh.py [--quick] [--only g6,g7,g8,g9,g10]

Starts one etcd and, phase by phase, stub runtimes, routers (`python -m mmesh.router`,
several forming one mesh where a goal needs it) and bench-ref pass-through proxies, all
on 127.0.0.1 random ports; prints a table; writes bench/results-mesh.json; stops every
process it started by pid (also on an error, Ctrl-C or SIGTERM). See bench/README.md
("Mesh benchmark") for what each number means and how it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import g6_eviction
import grpc
from harness import (
    BENCH,
    PY,
    REF,
    ROOT,
    environment,
    finish,
    fmt,
    goal,
    goal_lines,
    install_hooks,
    log,
    median,
    ratio,
    require_bench_ref,
    run_main,
    start_etcd,
    stop_on_signals,
)
from loadgen import METHOD, OPTIONS, pct, request_bytes
from procs import Proc, Processes, http_text, stop_one, wait_quiet

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.ids import ModelId
from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.core.proto import model_mesh_pb2_grpc as mm_grpc
from mmesh.core.records import KeyLayout, ModelRecord
from mmesh.local.processes import free_port, http_ok, port_open

SERVICE = "modelmesh-serving"
MIB = 1024 * 1024
UNIT = 8192  # stub model size: one 8 KiB cache unit, so capacity is never the limit
SYNC_LOG = "registry synced at revision"
T = TypeVar("T")
PHASES = ("g6", "g7", "g8", "g9", "g10")
NOT_FOUND = mm.ModelStatusInfo.NOT_FOUND
LOADED = mm.ModelStatusInfo.LOADED


@dataclass(frozen=True)
class Config:
    quick: bool
    reps: int
    """Rounds of each interleaved comparison (G7 hop, G9)."""
    warmup_s: float
    duration_s: float
    """Per closed-loop client run."""
    seed_concurrency: int
    g7_registered: int
    g7_sync_records: int
    g7_sync_reps: int
    g7_loaded: int
    g8_changes: int
    g8_burst: int
    g10_rate: float
    g10_warmup_s: float
    g10_duration_s: float
    load_concurrency: int
    """Concurrent ensureLoaded calls when pre-loading models."""
    quiet_max_wait_s: float

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(
                quick, 1, 0.3, 1.0, 64, 100_000, 20_000, 1, 1_000, 100, 20_000, 1000.0, 2.0, 30.0,
                32, 0.5,
            )  # fmt: skip
        return cls(
            quick, 3, 0.5, 3.0, 64, 100_000, 20_000, 3, 10_000, 200, 20_000, 1000.0, 3.0, 60.0,
            32, 1.5,
        )  # fmt: skip


# --------------------------------------------------------------------------- processes


@dataclass
class Stub:
    name: str
    port: int
    stats_port: int
    proc: Proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(http_text(f"http://127.0.0.1:{self.stats_port}/stats")))


@dataclass
class Router:
    name: str
    prefix: str
    grpc_port: int
    internal_port: int
    probe_port: int
    rest_port: int
    decode_port: int
    pause_port: int
    stall_port: int
    proc: Proc
    started_wall: float
    """time.time() just before the process was spawned."""
    ready_wall: float = 0.0
    metrics_port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def log_time(self, message_prefix: str) -> float | None:
        """Wall time of the first JSON log line whose message starts with the prefix."""
        for line in self.proc.log.read_text(errors="replace").splitlines():
            if message_prefix not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if str(rec.get("message", "")).startswith(message_prefix):
                return datetime.fromisoformat(rec["time"]).timestamp()
        return None

    def decode_counts(self) -> dict[str, int]:
        body = json.loads(http_text(f"http://127.0.0.1:{self.decode_port}/"))
        return {str(k): int(v) for k, v in body["counts"].items()}

    def gc_pauses(self) -> dict[str, Any]:
        """pause_hook's record: collections and ms per generation, pauses >= 1 ms."""
        return dict(json.loads(http_text(f"http://127.0.0.1:{self.pause_port}/")))

    def stalls(self) -> list[list[Any]]:
        """stall_hook's record: [wall time, ms, frame] of each event-loop stall >= 10 ms."""
        body = json.loads(http_text(f"http://127.0.0.1:{self.stall_port}/"))
        return list(body["stalls"])


def pause_window(before: dict[str, Any], after: dict[str, Any], since: float) -> dict[str, Any]:
    """GC pauses of a router between two pause_hook snapshots (`since`: wall time of the
    first): collections and ms per generation, and the long pauses."""
    long = [p for p in after["pauses"] if p[0] >= since]
    return {
        "collections": [a - b for a, b in zip(after["counts"], before["counts"], strict=True)],
        "total_ms": [
            round(a - b, 1) for a, b in zip(after["total_ms"], before["total_ms"], strict=True)
        ],
        "max_ms": max((p[2] for p in long), default=0.0),
        "over_10ms": sum(1 for p in long if p[2] >= 10),
        "over_10ms_total_ms": round(sum(p[2] for p in long if p[2] >= 10), 1),
    }


def stall_window(stalls: list[list[Any]], since: float) -> dict[str, Any]:
    """Event-loop stalls of a router after `since` (wall time): how many, the longest, their
    total, and the frames the loop was seen in most often."""
    mine = [s for s in stalls if s[0] >= since]
    where = Counter(str(s[2]) for s in mine)
    return {
        "over_10ms": len(mine),
        "max_ms": max((s[1] for s in mine), default=0.0),
        "total_ms": round(sum(s[1] for s in mine), 1),
        "frames": dict(where.most_common(8)),
    }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Mesh:
    """One etcd for the whole run, plus the servers of the current phase."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Processes(tmp)
        self.etcd_port = 0
        self.run_id = uuid.uuid4().hex[:8]
        self.pids: dict[str, int] = {}
        self._used: set[int] = set()

    def ports(self, n: int) -> list[int]:
        """`n` free ports, distinct from each other and from every port handed out before."""
        out: list[int] = []
        while len(out) < n:
            port = free_port()
            if port not in self._used:
                self._used.add(port)
                out.append(port)
        return out

    def retrying(self, start: Callable[[], T]) -> T:
        """Start a server again on fresh ports if a port it was given got taken meanwhile."""
        for attempt in range(3):
            try:
                return start()
            except RuntimeError as exc:
                text = str(exc).lower()
                taken = "already in use" in text or "failed to bind" in text
                if not taken or attempt == 2:
                    raise
                log(f"  a port was taken before the server bound it; retrying: {exc!s:.200}")
        raise AssertionError("unreachable")

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    def prefix(self, name: str) -> str:
        return f"/mmmesh-{self.run_id}-{name}"

    def start_etcd(self, data_dir: Path) -> None:
        cport, pport = self.ports(2)
        flags = ["--quota-backend-bytes=4294967296"]
        proc = start_etcd(self.procs, "mmmesh", data_dir, (cport, pport), flags=flags)
        self.etcd_port = cport
        self.pids["etcd"] = proc.pid

    def start_stub(self, name: str, *, capacity_bytes: int = 512 * MIB, loading: int = 8) -> Stub:
        return self.retrying(lambda: self._start_stub(name, capacity_bytes, loading))

    def _start_stub(self, name: str, capacity_bytes: int, loading: int) -> Stub:
        port, stats = self.ports(2)
        cmd = [PY, "-m", "mmesh.stubs.runtime", "--port", str(port), "--stats-port", str(stats)]
        cmd += ["--capacity-bytes", str(capacity_bytes), "--size-bytes", str(UNIT)]
        cmd += ["--default-size-bytes", str(UNIT), "--load-delay-ms", "0"]
        cmd += ["--loading-concurrency", str(loading)]
        proc = self.procs.start(f"stub-{name}", cmd, cwd=ROOT)
        url = f"http://127.0.0.1:{stats}/stats"
        self.procs.wait_ready(proc, lambda: port_open(port) and http_ok(url))
        self.pids[f"stub-{name}"] = proc.pid
        return Stub(name, port, stats, proc)

    def start_router(
        self,
        name: str,
        prefix: str,
        stub: Stub,
        *,
        env: dict[str, str] | None = None,
        hooks: Sequence[str] = (),
        timeout_s: float = 60.0,
        cwd: Path = ROOT,
    ) -> Router:
        """`hooks`: any of "decode", "pause", "stall" (bench/<hook>_hook.py) in the router.
        `cwd`: where `python -m mmesh.router` runs (its `mmesh` package comes from there)."""
        return self.retrying(
            lambda: self._start_router(name, prefix, stub, env, hooks, timeout_s, cwd)
        )

    def _start_router(
        self,
        name: str,
        prefix: str,
        stub: Stub,
        env: dict[str, str] | None,
        hooks: Sequence[str],
        timeout_s: float,
        cwd: Path = ROOT,
    ) -> Router:
        ports = self.ports(8)
        kv_store = {"endpoints": f"http://{self.etcd_endpoint}", "root_prefix": prefix}
        full_env = {
            "MM_INSTANCE_ID": f"{name}-{self.run_id}",
            "KV_STORE": "etcd:" + json.dumps(kv_store),
            "INTERNAL_GRPC_PORT": str(stub.port),
            "INTERNAL_SERVING_GRPC_PORT": str(stub.port),
            "MM_SVC_GRPC_PORT": str(ports[0]),
            "MM_INTERNAL_GRPC_PORT": str(ports[1]),
            "REST_PROXY_LISTEN_PORT": str(ports[2]),
            "MM_METRICS": f"prometheus:port={ports[3]};scheme=http",
            "MM_PROBE_PORT": str(ports[4]),
            "MM_PRESTOP_WAIT_PORT": "0",
            "MM_LOG_JSON": "true",
            "MM_LOG_LEVEL": "INFO",
            "SHUTDOWN_TIMEOUT_MS": "3000",
            **(env or {}),
        }
        hook_ports = {"decode": ports[5], "pause": ports[6], "stall": ports[7]}
        if hooks:
            wanted = {hook: hook_ports[hook] for hook in hooks}
            full_env |= install_hooks(self.tmp / f"hook-{name}", wanted)
        started = time.time()
        proc = self.procs.start(f"router-{name}", [PY, "-m", "mmesh.router"], env=full_env, cwd=cwd)
        router = Router(
            name, prefix, ports[0], ports[1], ports[4], ports[2], ports[5], ports[6], ports[7],
            proc, started,
        )  # fmt: skip
        probe = f"http://127.0.0.1:{ports[4]}/ready"
        self.procs.wait_ready(proc, lambda: http_ok(probe), timeout_s=timeout_s)
        router.ready_wall = time.time()
        router.metrics_port = ports[3]
        for hook in hooks:
            self.procs.wait_ready(proc, functools.partial(port_open, hook_ports[hook]), timeout_s=5)
        self.pids[f"router-{name}"] = proc.pid
        return router

    def start_proxy(self, name: str, target_port: int) -> tuple[int, Proc]:
        return self.retrying(lambda: self._start_proxy(name, target_port))

    def _start_proxy(self, name: str, target_port: int) -> tuple[int, Proc]:
        (port,) = self.ports(1)
        cmd = [PY, str(REF / "proxy.py"), "--mode", "aio", "--bind", f"127.0.0.1:{port}"]
        cmd += ["--target", f"127.0.0.1:{target_port}"]
        proc = self.procs.start(f"proxy-{name}", cmd, cwd=REF)
        self.procs.wait_ready(proc, lambda: port_open(port))
        self.pids[f"proxy-{name}"] = proc.pid
        return port, proc

    def stop(self, *procs: Proc) -> None:
        """Stop these processes (by pid, in the order given) and forget them."""
        for proc in procs:
            stop_one(proc, 10.0)
            if proc in self.procs.procs:
                self.procs.procs.remove(proc)


@contextmanager
def running_mesh() -> Iterator[Mesh]:
    tmp = Path(tempfile.mkdtemp(prefix="mmmesh-"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    data_dir = Path(tempfile.mkdtemp(prefix="mmmesh-etcd-", dir=shm))
    mesh = Mesh(tmp)
    ok = False
    try:
        mesh.start_etcd(data_dir)
        yield mesh
        ok = True
    finally:
        mesh.procs.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)


# --------------------------------------------------------------------------- etcd side


def record_json(model_id: str, model_type: str = "stub") -> bytes:
    """What registerModel writes for a new model (last used 6 h ago, no copies)."""
    six_hours_ago = int(time.time() * 1000) - 6 * 3_600_000
    rec = ModelRecord(model_type, f"/models/{model_id}", last_used_ms=six_hours_ago)
    return rec.to_json()


async def connect(mesh: Mesh) -> EtcdKV:
    return await EtcdKV.connect(EtcdConnection.from_endpoint(mesh.etcd_endpoint))


@dataclass
class Seeded:
    count: int
    seconds: float
    last_id: str
    """The model whose put got the highest revision (a watcher that saw it saw all)."""
    last_revision: int
    done_at: float
    """perf_counter() when the last put returned."""

    @property
    def puts_per_s(self) -> float:
        return self.count / self.seconds if self.seconds else float("inf")


async def seed_async(
    kv: EtcdKV, prefix: str, ids: Sequence[str], concurrency: int, model_type: str = "stub"
) -> Seeded:
    """Write model records straight into etcd, `concurrency` puts in flight."""
    layout = KeyLayout(prefix, SERVICE)
    todo = iter(ids)
    best: list[tuple[int, str]] = [(0, "")]

    async def writer() -> None:
        for model_id in todo:
            value = record_json(model_id, model_type)
            rev = await kv.put(layout.model_key(ModelId(model_id)), value)
            if rev > best[0][0]:
                best[0] = (rev, model_id)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    t1 = time.perf_counter()
    return Seeded(len(ids), t1 - t0, best[0][1], best[0][0], t1)


def seed(mesh: Mesh, prefix: str, ids: Sequence[str], concurrency: int) -> Seeded:
    async def go() -> Seeded:
        kv = await connect(mesh)
        try:
            return await seed_async(kv, prefix, ids, concurrency)
        finally:
            await kv.close()

    return asyncio.run(go())


def compact(mesh: Mesh) -> int:
    """Compact etcd's history to now (only while no router watches)."""

    async def go() -> int:
        kv = await connect(mesh)
        try:
            _, revision = await kv.range_prefix("/mmmesh-compact-probe/")
            await kv.compact(revision)
            return revision
        finally:
            await kv.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------- clients


def write_ids(mesh: Mesh, name: str, ids: Sequence[str]) -> Path:
    path = mesh.tmp / f"models-{name}.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def client_run(
    target: str,
    models: Path,
    *,
    label: str,
    watch: dict[str, int],
    mode: str = "closed",
    pick: str = "uniform",
    concurrency: int = 1,
    rate: float = 0.0,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    cmd = [PY, str(BENCH / "meshload.py"), "--target", target, "--models-file", str(models)]
    cmd += ["--mode", mode, "--pick", pick, "-c", str(concurrency), "--rate", str(rate or 1)]
    cmd += ["--warmup", str(warmup_s), "--duration", str(duration_s), "--label", label]
    cmd += ["--watch", ",".join(str(p) for p in watch.values())]
    limit = warmup_s + duration_s + 90
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"meshload {label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    names = {str(pid): name for name, pid in watch.items()}
    out["cpu_us_per_req"] = {names[p]: v for p, v in out["cpu_us_per_req"].items()}
    out["cpu_s"] = {names[p]: v for p, v in out["cpu_s"].items()}
    return out


def quiet(cfg: Config) -> float:
    return wait_quiet(min_idle=0.85, window_s=0.3, max_wait_s=cfg.quiet_max_wait_s)


def interleaved(
    cfg: Config, runs: dict[str, Callable[[], dict[str, Any]]], what: str
) -> list[dict[str, dict[str, Any]]]:
    """`reps` rounds; each runs every target once, the order rotated from round to round."""
    names = list(runs)
    rounds = []
    for rep in range(cfg.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        got: dict[str, dict[str, Any]] = {}
        for name in order:
            idle = quiet(cfg)
            res = runs[name]()
            res["idle_before"] = round(idle, 3)
            if res["errors"]:
                raise RuntimeError(f"{what} {name}: {res['errors']} errors {res['error_samples']}")
            got[name] = res
            log(
                f"  {what} rep {rep + 1} {name:10} p50 {res['p50_ms']:.3f} ms  p99 "
                f"{res['p99_ms']:.3f} ms  {res['rps']:.0f} req/s  (idle before {idle:.0%})"
            )
        rounds.append({k: got[k] for k in names})
    return rounds


async def ensure_loaded_all(
    target: str, ids: Sequence[str], concurrency: int
) -> tuple[int, float, list[str]]:
    """ensureLoaded(sync) for every id, `concurrency` at a time: (loaded, seconds, errors)."""
    todo = iter(ids)
    loaded = [0]
    errors: list[str] = []

    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = mm_grpc.ModelMeshStub(channel)

        async def worker() -> None:
            for model_id in todo:
                req = mm.EnsureLoadedRequest(modelId=model_id, sync=True)
                try:
                    status = await stub.ensureLoaded(req, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{model_id}: {exc.code().name}: {exc.details()}")
                    continue
                if status.status == LOADED:
                    loaded[0] += 1
                else:
                    errors.append(f"{model_id}: status {status.status} {list(status.errors)}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return loaded[0], time.perf_counter() - t0, errors


def preload(router: Router, ids: Sequence[str], concurrency: int) -> dict[str, Any]:
    loaded, seconds, errors = asyncio.run(ensure_loaded_all(router.target, ids, concurrency))
    log(f"  {router.name}: {loaded}/{len(ids)} loaded in {seconds:.1f} s")
    if loaded != len(ids):
        raise RuntimeError(f"{router.name}: only {loaded}/{len(ids)} loaded: {errors[:5]}")
    return {"models": len(ids), "seconds": round(seconds, 2), "loads_per_s": loaded / seconds}


# --------------------------------------------------------------------------- goals


def g6(cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    del cfg
    rows = g6_eviction.run()
    for row in rows:
        log(
            f"  {row['trace']}/{row['sizes']}: LocalCache hit {row['local_cache_hit']:.4f}, "
            f"sim LRU {row['sim_lru_hit']:.4f}, Belady {row['belady_hit']:.4f}, "
            f"misses/Belady {row['miss_over_belady']:.3f}"
        )
    return g6_eviction.goals(rows), {"rows": rows}


# --------------------------------------------------------------------------- G7


def sync_seconds(router: Router) -> float:
    at = router.log_time(SYNC_LOG)
    if at is None:
        raise RuntimeError(f"{router.name}: no '{SYNC_LOG}' log line:\n{router.proc.tail()}")
    return at - router.started_wall


def g7_sync(mesh: Mesh, cfg: Config, p0: str, p20: str) -> dict[str, Any]:
    """Routers on an empty registry and on one of `g7_sync_records`, started one at a time:
    time from spawn to the "registry synced" log line, and RSS once ready."""
    stub = mesh.start_stub("g7sync")
    out: dict[str, list[float]] = {k: [] for k in ("empty_s", "full_s", "empty_rss", "full_rss")}
    for rep in range(cfg.g7_sync_reps):
        for kind, prefix in (("empty", p0), ("full", p20)):
            quiet(cfg)
            router = mesh.start_router(f"g7{kind}{rep}", prefix, stub)
            time.sleep(1.0)
            out[f"{kind}_rss"].append(router.rss_bytes())
            out[f"{kind}_s"].append(sync_seconds(router))
            mesh.stop(router.proc)
            log(
                f"  {kind} registry: synced {out[f'{kind}_s'][-1]:.3f} s after spawn, RSS "
                f"{out[f'{kind}_rss'][-1] / MIB:.1f} MiB"
            )
    mesh.stop(stub.proc)
    return out


def g7(mesh: Mesh, cfg: Config, prefixes: dict[str, str]) -> tuple[list[dict[str, Any]], Any]:
    sync = g7_sync(mesh, cfg, prefixes["empty"], prefixes["g10"])
    sync_cost = median(sync["full_s"]) - median(sync["empty_s"])
    empty_rss = median(sync["empty_rss"])
    per_model_20k = (median(sync["full_rss"]) - empty_rss) / cfg.g7_sync_records

    small_stub, big_stub = mesh.start_stub("g7small"), mesh.start_stub("g7big")
    small = mesh.start_router("g7small", prefixes["small"], small_stub, hooks=["pause"])
    big = mesh.start_router("g7big", prefixes["big"], big_stub, hooks=["pause"], timeout_s=120)
    time.sleep(1.0)
    big_rss = big.rss_bytes()
    big_sync_s = sync_seconds(big)
    per_model = (big_rss - empty_rss) / cfg.g7_registered
    log(
        f"  {cfg.g7_registered} registered: RSS {big_rss / MIB:.1f} MiB (empty "
        f"{empty_rss / MIB:.1f}) -> {per_model:.0f} B/model; synced {big_sync_s:.2f} s after spawn"
    )
    small_ids = [f"g7s-{i}" for i in range(10)]
    big_ids = [f"g7-{i:06d}" for i in range(cfg.g7_registered)]
    loaded_ids = random.Random(7).sample(big_ids, cfg.g7_loaded)
    loads = {"small": preload(small, small_ids, 10)}
    loads["big"] = preload(big, loaded_ids, cfg.load_concurrency)
    big_rss_loaded = big.rss_bytes()
    files = {
        "small": write_ids(mesh, "g7small", small_ids),
        "big": write_ids(mesh, "g7big", loaded_ids),
    }

    def run(target: str, port: int, which: str, watch: dict[str, int]) -> Callable[[], Any]:
        return lambda: client_run(
            f"127.0.0.1:{port}",
            files[which],
            label=f"g7-{target}",
            watch=watch,
            warmup_s=cfg.warmup_s,
            duration_s=cfg.duration_s,
        )

    runs = {
        "direct-10": run("direct-10", small_stub.port, "small", {"stub": small_stub.pid}),
        "router-10": run(
            "router-10", small.grpc_port, "small", {"router": small.pid, "stub": small_stub.pid}
        ),
        "direct-100k": run("direct-100k", big_stub.port, "big", {"stub": big_stub.pid}),
        "router-100k": run(
            "router-100k", big.grpc_port, "big", {"router": big.pid, "stub": big_stub.pid}
        ),
    }
    gc0 = {"10": small.gc_pauses(), "100k": big.gc_pauses()}
    since = time.time()
    rounds = interleaved(cfg, runs, "G7 hop")
    gc_hop = {
        "router-10": pause_window(gc0["10"], small.gc_pauses(), since),
        "router-100k": pause_window(gc0["100k"], big.gc_pauses(), since),
    }
    log(f"  GC pauses during the hop runs: {gc_hop}")
    mesh.stop(big.proc, small.proc, big_stub.proc, small_stub.proc)
    hop = {
        key: [
            ratio(
                r["router-100k"][key] - r["direct-100k"][key],
                r["router-10"][key] - r["direct-10"][key],
            )
            for r in rounds
        ]
        for key in ("p50_ms", "p99_ms")
    }
    big_label = f"{cfg.g7_registered // 1000}K"
    goals = [
        goal(
            f"G7 RSS per registered model, {big_label} registered (B)",
            per_model,
            "<= 2048",
            per_model <= 2048,
            rss_mib=round(big_rss / MIB, 1),
            empty_rss_mib=round(empty_rss / MIB, 1),
            per_model_at_20k=round(per_model_20k, 1),
        ),
        goal(
            f"G7 startup sync of {cfg.g7_sync_records // 1000}K records (s)",
            sync_cost,
            "<= 1.0",
            sync_cost <= 1.0,
            per_rep_full_s=[round(x, 3) for x in sync["full_s"]],
            per_rep_empty_s=[round(x, 3) for x in sync["empty_s"]],
            sync_100k_minus_empty_s=round(big_sync_s - median(sync["empty_s"]), 3),
        ),
        goal(
            f"G7 warm hop overhead p50, {big_label} reg/{cfg.g7_loaded // 1000}K loaded vs 10",
            median(hop["p50_ms"]),
            "<= 1.1",
            median(hop["p50_ms"]) <= 1.1,
            per_rep=hop["p50_ms"],
            p99_ratio=median(hop["p99_ms"]),
            gc_ms_router_100k=sum(gc_hop["router-100k"]["total_ms"]),
            gc_ms_router_10=sum(gc_hop["router-10"]["total_ms"]),
        ),
    ]
    detail = {
        "sync": sync,
        "big_rss_bytes": big_rss,
        "big_rss_after_loads_bytes": big_rss_loaded,
        "bytes_per_loaded_model": (big_rss_loaded - big_rss) / cfg.g7_loaded,
        "big_sync_s_after_spawn": big_sync_s,
        "loads": loads,
        "hop_rounds": rounds,
        "hop_ratios": hop,
        "gc_pauses_during_hop_runs": gc_hop,
        "raw": raw_rows(rounds),
    }
    return goals, detail


def raw_rows(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        rows[name] = {
            k: round(median([x[k] for x in runs if x[k] is not None]), 4)
            for k in ("p50_ms", "p99_ms", "rps")
        }
        cpu = [sum(v or 0 for k, v in x["cpu_us_per_req"].items() if k != "stub") for x in runs]
        rows[name]["hop_cpu_us_per_req"] = round(median(cpu), 1)
    return rows


# --------------------------------------------------------------------------- G8


async def poll_until(
    stub: Any, model_id: str, wanted: Callable[[int], bool], deadline_s: float
) -> tuple[float, int]:
    """Call getModelStatus back to back until `wanted(status)`: (perf_counter, polls)."""
    req = mm.GetStatusRequest(modelId=model_id)
    polls = 0
    end = time.perf_counter() + deadline_s
    while True:
        status = await stub.getModelStatus(req, timeout=5)
        polls += 1
        now = time.perf_counter()
        if wanted(status.status):
            return now, polls
        if now > end:
            raise TimeoutError(f"{model_id}: status still {status.status} after {deadline_s} s")


def summarize_ms(xs: Sequence[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


async def g8_measure(mesh: Mesh, cfg: Config, a: Router, b: Router) -> dict[str, Any]:
    layout = KeyLayout(a.prefix, SERVICE)
    kv = await connect(mesh)
    value = record_json("g8")
    found: Callable[[int], bool] = lambda s: s != NOT_FOUND  # noqa: E731
    out: dict[str, Any] = {}
    try:
        async with (
            grpc.aio.insecure_channel(a.target) as cha,
            grpc.aio.insecure_channel(b.target) as chb,
        ):
            sa, sb = mm_grpc.ModelMeshStub(cha), mm_grpc.ModelMeshStub(chb)
            info = mm.ModelInfo(type="stub", path="/models/g8")
            await sa.registerModel(mm.RegisterModelRequest(modelId="g8-known", modelInfo=info))
            await poll_until(sb, "g8-known", found, 5)
            # Measurement floor: one put (of a key nobody mirrors) + one poll that succeeds.
            floor = []
            probe = f"/mmmesh-{mesh.run_id}-g8probe"
            for _ in range(cfg.g8_changes):
                t0 = time.perf_counter()
                await kv.put(probe, b"x")
                t1, _ = await poll_until(sb, "g8-known", found, 5)
                floor.append(t1 - t0)
            # A record written straight into etcd, until B's getModelStatus shows it.
            via_etcd, polls_etcd = [], []
            for i in range(cfg.g8_changes):
                key = layout.model_key(ModelId(f"g8-e-{i:04d}"))
                t0 = time.perf_counter()
                await kv.put(key, value)
                t1, polls = await poll_until(sb, f"g8-e-{i:04d}", found, 5)
                via_etcd.append(t1 - t0)
                polls_etcd.append(polls)
            # registerModel on router A (its CAS write), until B shows the model.
            via_a, a_rtt, after_reply = [], [], []
            for i in range(cfg.g8_changes):
                model_id = f"g8-a-{i:04d}"
                t0 = time.perf_counter()
                await sa.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=info))
                t_reply = time.perf_counter()
                t1, _ = await poll_until(sb, model_id, found, 5)
                via_a.append(t1 - t0)
                a_rtt.append(t_reply - t0)
                after_reply.append(t1 - t_reply)
            out["floor"] = summarize_ms(floor)
            out["via_etcd"] = summarize_ms(via_etcd)
            out["via_etcd"]["polls_p50"] = median(polls_etcd)
            out["via_register_on_a"] = summarize_ms(via_a)
            out["register_rtt_on_a"] = summarize_ms(a_rtt)
            out["b_after_a_replied"] = summarize_ms(after_reply)
            # Burst: many registrations straight into etcd, then B until it shows the last.
            ids = [f"g8-burst-{i:06d}" for i in range(cfg.g8_burst)]
            seeded = await seed_async(kv, a.prefix, ids, cfg.seed_concurrency)
            seen_at, polls = await poll_until(sb, seeded.last_id, found, 30)
            sample = random.Random(8).sample(ids, 200)
            missing = 0
            for model_id in sample:
                status = await sb.getModelStatus(mm.GetStatusRequest(modelId=model_id))
                missing += status.status == NOT_FOUND
            out["burst"] = {
                "registrations": len(ids),
                "put_seconds": round(seeded.seconds, 3),
                "puts_per_s": round(seeded.puts_per_s),
                "lag_after_last_put_s": round(seen_at - seeded.done_at, 4),
                "polls": polls,
                "sampled_missing_after": missing,
            }
    finally:
        await kv.close()
    return out


def g8(mesh: Mesh, cfg: Config, prefix: str) -> tuple[list[dict[str, Any]], Any]:
    stub_a, stub_b = mesh.start_stub("g8a"), mesh.start_stub("g8b")
    a = mesh.start_router("g8a", prefix, stub_a)
    b = mesh.start_router("g8b", prefix, stub_b)
    quiet(cfg)
    res = asyncio.run(g8_measure(mesh, cfg, a, b))
    mesh.stop(b.proc, a.proc, stub_b.proc, stub_a.proc)
    for k in ("floor", "via_etcd", "via_register_on_a", "register_rtt_on_a", "b_after_a_replied"):
        log(f"  {k}: {res[k]}")
    log(f"  burst: {res['burst']}")
    burst = res["burst"]
    goals = [
        goal(
            "G8 propagation p99, etcd write -> B's getModelStatus (ms)",
            res["via_etcd"]["p99_ms"],
            "<= 5",
            res["via_etcd"]["p99_ms"] <= 5,
            p50_ms=res["via_etcd"]["p50_ms"],
            n=res["via_etcd"]["n"],
            floor_p50_ms=res["floor"]["p50_ms"],
            floor_p99_ms=res["floor"]["p99_ms"],
        ),
        goal(
            "G8 propagation p99, registerModel on A -> B (ms)",
            res["via_register_on_a"]["p99_ms"],
            "<= 5",
            res["via_register_on_a"]["p99_ms"] <= 5,
            p50_ms=res["via_register_on_a"]["p50_ms"],
            a_rtt_p50_ms=res["register_rtt_on_a"]["p50_ms"],
            after_a_reply_p99_ms=res["b_after_a_replied"]["p99_ms"],
        ),
        goal(
            f"G8 mirror lag after a {burst['registrations'] // 1000}K burst (s)",
            burst["lag_after_last_put_s"],
            "<= 1.5",
            burst["lag_after_last_put_s"] <= 1.5 and burst["sampled_missing_after"] == 0,
            put_seconds=burst["put_seconds"],
            sampled_missing=burst["sampled_missing_after"],
        ),
    ]
    return goals, res


# --------------------------------------------------------------------------- G9


G9_MODEL = "g9-model"
G9_LABEL = "mt:g9bench"


def g9_place(a: Router, stub_a: Stub, stub_b: Stub) -> None:
    """Register the model on A; its type's label exists only on B, so B loads it."""
    with grpc.insecure_channel(a.target) as ch:
        mesh_api = mm_grpc.ModelMeshStub(ch)
        info = mm.ModelInfo(type=G9_LABEL, path=f"/models/{G9_MODEL}")
        mesh_api.registerModel(mm.RegisterModelRequest(modelId=G9_MODEL, modelInfo=info))
        deadline = time.monotonic() + 20
        while G9_MODEL not in stub_b.stats()["loaded"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{G9_MODEL} never loaded on B")
            req = mm.EnsureLoadedRequest(modelId=G9_MODEL, sync=True)
            try:
                mesh_api.ensureLoaded(req, timeout=10)
            except grpc.RpcError:
                time.sleep(0.2)  # A has not seen B's instance record yet
        infer = ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        infer(request_bytes("small", G9_MODEL), timeout=10)
    if G9_MODEL in stub_a.stats()["loaded"]:
        raise RuntimeError(f"{G9_MODEL} is loaded on A too: the A -> B hop would not happen")


def g9(mesh: Mesh, cfg: Config, prefix: str) -> tuple[list[dict[str, Any]], Any]:
    stub_a, stub_b = mesh.start_stub("g9a"), mesh.start_stub("g9b")
    env = {"MM_INSTANCE_LEASE_TTL_SECS": "5"}
    b = mesh.start_router(
        "g9b", prefix, stub_b, env={**env, "MM_LABELS": G9_LABEL}, hooks=["decode"]
    )
    a = mesh.start_router("g9a", prefix, stub_a, env=env, hooks=["decode"])
    proxy_port, proxy = mesh.start_proxy("g9", stub_b.port)
    chain_port, chain = mesh.start_proxy("g9chain", proxy_port)
    g9_place(a, stub_a, stub_b)
    files = write_ids(mesh, "g9", [G9_MODEL])
    pids = {"a": a.pid, "b": b.pid, "proxy": proxy.pid, "chain": chain.pid, "stub": stub_b.pid}
    ports = {
        "direct": stub_b.port,
        "proxy": proxy_port,
        "2-proxy": chain_port,
        "router": b.grpc_port,
        "A->B": a.grpc_port,
    }
    decodes0 = {"a": a.decode_counts(), "b": b.decode_counts()}

    def runs(conc: int, names: Sequence[str]) -> dict[str, Callable[[], dict[str, Any]]]:
        return {
            n: (
                lambda n=n: client_run(  # type: ignore[misc]
                    f"127.0.0.1:{ports[n]}",
                    files,
                    label=f"g9-c{conc}-{n}",
                    watch=pids,
                    concurrency=conc,
                    warmup_s=cfg.warmup_s,
                    duration_s=cfg.duration_s,
                )
            )
            for n in names
        }

    lat = interleaved(cfg, runs(1, list(ports)), "G9 c=1")
    thr = interleaved(cfg, runs(16, ["2-proxy", "A->B"]), "G9 c=16")
    decodes1 = {"a": a.decode_counts(), "b": b.decode_counts()}
    b_infers = stub_b.stats()["infers"].get(G9_MODEL, 0)
    a_infers = stub_a.stats()["infers"].get(G9_MODEL, 0)
    mesh.stop(chain, proxy, a.proc, b.proc, stub_b.proc, stub_a.proc)
    added = [
        ratio(
            r["A->B"]["p50_ms"] - r["direct"]["p50_ms"],
            r["proxy"]["p50_ms"] - r["direct"]["p50_ms"],
        )
        for r in lat
    ]
    added_chain = [
        ratio(
            r["2-proxy"]["p50_ms"] - r["direct"]["p50_ms"],
            r["proxy"]["p50_ms"] - r["direct"]["p50_ms"],
        )
        for r in lat
    ]
    rps = [ratio(r["A->B"]["rps"], r["2-proxy"]["rps"]) for r in thr]
    request_decodes = {
        k: sum(
            v - decodes0[k].get(name, 0)
            for name, v in decodes1[k].items()
            if name.startswith("inference.ModelInferRequest")
        )
        for k in ("a", "b")
    }

    def cpu(rounds: list[dict[str, dict[str, Any]]], run: str, role: str) -> float:
        return round(median([r[run]["cpu_us_per_req"][role] or 0 for r in rounds]), 1)

    goals = [
        goal(
            "G9 added p50 A->B->stub / single-proxy added p50",
            median(added),
            "<= 2.2",
            median(added) <= 2.2,
            per_rep=added,
            two_proxy_chain_ratio=median(added_chain),
            cpu_us_a=cpu(lat, "A->B", "a"),
            cpu_us_b=cpu(lat, "A->B", "b"),
            cpu_us_b_single_hop=cpu(lat, "router", "b"),
            cpu_us_proxy=cpu(lat, "proxy", "proxy"),
        ),
        goal(
            "G9 throughput c=16 A->B / two-proxy chain",
            median(rps),
            ">= 0.8",
            median(rps) >= 0.8,
            per_rep=rps,
            cpu_us_a=cpu(thr, "A->B", "a"),
            cpu_us_b=cpu(thr, "A->B", "b"),
            cpu_us_chain_1st=cpu(thr, "2-proxy", "chain"),
            cpu_us_chain_2nd=cpu(thr, "2-proxy", "proxy"),
        ),
        goal(
            "G9 full ModelInferRequest decodes on A and B",
            float(sum(request_decodes.values())),
            "== 0",
            sum(request_decodes.values()) == 0 and a_infers == 0 and b_infers > 0,
            stub_a_infers=a_infers,
            stub_b_infers=b_infers,
        ),
    ]
    detail = {
        "c1_rounds": lat,
        "c16_rounds": thr,
        "raw_c1": raw_rows(lat),
        "raw_c16": raw_rows(thr),
        "decodes_before": decodes0,
        "decodes_after": decodes1,
    }
    return goals, detail


# --------------------------------------------------------------------------- G10

INSIDE = {
    "handler": "modelmesh_api_request_milliseconds",
    "runtime call": "modelmesh_invoke_model_milliseconds",
}
"""The router's own request histograms: time in its handler, and in its call to the stub."""


def router_histograms(router: Router) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts (summed over labels) of the INSIDE histograms."""
    text = http_text(f"http://127.0.0.1:{router.metrics_port}/metrics")
    out: dict[str, dict[float, float]] = {key: {} for key in INSIDE}
    for line in text.splitlines():
        for key, name in INSIDE.items():
            if line.startswith(f"{name}_bucket{{"):
                le = float(line.split('le="', 1)[1].split('"', 1)[0])
                out[key][le] = out[key].get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def inside_quantiles(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, str]:
    """Per INSIDE histogram, the bucket bound under which 99 % of the window's samples fall
    (the buckets are coarse: an upper bound, enough to tell the router's time from the rest)."""
    out = {}
    for key in INSIDE:
        counts = {le: n - before[key].get(le, 0.0) for le, n in after[key].items()}
        total = counts.get(float("inf"), 0.0)
        bound = next((le for le in sorted(counts) if total and counts[le] >= 0.99 * total), None)
        out[f"{key} p99 <="] = "none" if bound is None else f"{bound:g} ms"
    return out


def g10(mesh: Mesh, cfg: Config, prefix: str, ids: list[str]) -> tuple[list[dict[str, Any]], Any]:
    stub = mesh.start_stub("g10", capacity_bytes=1024 * MIB, loading=8)
    router = mesh.start_router("g10", prefix, stub, hooks=["pause", "stall"])
    loads = preload(router, ids, cfg.load_concurrency)
    proxy_port, proxy = mesh.start_proxy("g10", stub.port)
    files = write_ids(mesh, "g10", ids)
    watch = {"router": router.pid, "proxy": proxy.pid, "stub": stub.pid}
    rss_before = router.rss_bytes()
    results: dict[str, Any] = {}
    for name, port in (("router", router.grpc_port), ("proxy", proxy_port)):
        idle = quiet(cfg)
        gc0, since = router.gc_pauses(), time.time()
        inside0 = router_histograms(router)
        res = client_run(
            f"127.0.0.1:{port}",
            files,
            label=f"g10-{name}",
            watch=watch,
            mode="open",
            pick="zipf",
            rate=cfg.g10_rate,
            warmup_s=cfg.g10_warmup_s,
            duration_s=cfg.g10_duration_s,
        )
        res["idle_before"] = round(idle, 3)
        res["router_gc"] = pause_window(gc0, router.gc_pauses(), since)
        res["router_stalls"] = stall_window(router.stalls(), since)
        if name == "router":
            res["inside_router"] = inside_quantiles(inside0, router_histograms(router))
        results[name] = res
        log(
            f"  {name:6} open loop {cfg.g10_rate:.0f}/s: {res['rps']:.0f} answered/s, p50 "
            f"{res['p50_ms']} ms, p99 {res['p99_ms']} ms, max {res['max_ms']} ms, "
            f"{res['errors']} errors, send lag p99 {res['send_lag_p99_ms']} ms; router GC "
            f"{res['router_gc']}; loop stalls {res['router_stalls']}"
        )
    rss_after = router.rss_bytes()
    loaded_on_stub = len(stub.stats()["loaded"])
    mesh.stop(proxy, router.proc, stub.proc)
    r, p = results["router"], results["proxy"]
    p99_ratio = ratio(r["p99_ms"] or float("inf"), p["p99_ms"] or 0)
    sent = int(cfg.g10_rate * cfg.g10_duration_s)
    goals = [
        goal(
            f"G10 open loop {cfg.g10_rate:.0f}/s over {len(ids) // 1000}K models: router p99 (ms)",
            r["p99_ms"],
            "<= 10",
            r["p99_ms"] is not None and r["p99_ms"] <= 10,
            p50_ms=r["p50_ms"],
            max_ms=r["max_ms"],
            service_p99_ms=r["service_p99_ms"],
            send_lag_p99_ms=r["send_lag_p99_ms"],
            router_gc_pauses_over_10ms=r["router_gc"]["over_10ms"],
            router_gc_max_ms=r["router_gc"]["max_ms"],
            router_gc_total_ms=sum(r["router_gc"]["total_ms"]),
            router_loop_stalls_over_10ms=r["router_stalls"]["over_10ms"],
            router_loop_stall_max_ms=r["router_stalls"]["max_ms"],
            router_loop_stall_frames=r["router_stalls"]["frames"],
            inside_router=r["inside_router"],
        ),
        goal(
            "G10 errors through the router",
            float(r["errors"] + (sent - r["n"] - r["errors"])),
            "== 0",
            r["errors"] == 0 and r["n"] == sent,
            answered=r["n"],
            sent=sent,
            samples=r["error_samples"],
        ),
        goal(
            "G10 router p99 / proxy p99 (same open loop)",
            p99_ratio,
            "<= 1.5",
            p99_ratio <= 1.5,
            proxy_p99_ms=p["p99_ms"],
            proxy_p50_ms=p["p50_ms"],
            proxy_errors=p["errors"],
            router_cpu_us=r["cpu_us_per_req"]["router"],
            proxy_cpu_us=p["cpu_us_per_req"]["proxy"],
        ),
    ]
    detail = {
        "loads": loads,
        "loaded_on_stub": loaded_on_stub,
        "router_rss_mib": [round(rss_before / MIB, 1), round(rss_after / MIB, 1)],
        "runs": results,
    }
    return goals, detail


# --------------------------------------------------------------------------- report


def print_report(results: dict[str, Any]) -> None:
    lines = ["", "Mesh goals (ratios: median over rounds of the per-round ratio)", ""]
    lines += goal_lines(results["goals"], widths=(66, 10, 14), rule=100)
    for phase, key in (("G7", "raw"), ("G9", "raw_c1"), ("G9", "raw_c16")):
        rows = results.get(phase.lower(), {}).get(key)
        if not rows:
            continue
        lines += ["", f"Raw {phase} {key} (median over rounds)", ""]
        lines.append(
            f"{'target':12} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'hop CPU us/req':>15}"
        )
        for name, row in rows.items():
            lines.append(
                f"{name:12} {fmt(row['p50_ms']):>9} {fmt(row['p99_ms']):>9}"
                f" {fmt(row['rps'], 0):>9} {fmt(row['hop_cpu_us_per_req'], 1):>15}"
            )
    g10 = results.get("g10", {}).get("runs")
    if g10:
        lines += ["", "Raw G10 (open loop)", ""]
        lines.append(
            f"{'target':8} {'answered/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9':>8}"
            f" {'max ms':>8} {'errors':>6} {'lag p99':>8} {'CPU us/req':>10}"
        )
        for name, r in g10.items():
            lines.append(
                f"{name:8} {fmt(r['rps'], 0):>10} {fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8}"
                f" {fmt(r['p999_ms']):>8} {fmt(r['max_ms']):>8} {r['errors']:>6}"
                f" {fmt(r['send_lag_p99_ms']):>8} {fmt(r['cpu_us_per_req'].get(name), 1):>10}"
            )
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- main


def seed_all(mesh: Mesh, cfg: Config, phases: Sequence[str]) -> dict[str, Any]:
    """Registry contents written straight into etcd before any router starts."""
    out: dict[str, Any] = {}
    plan: list[tuple[str, list[str]]] = []
    if "g7" in phases:
        plan.append(("big", [f"g7-{i:06d}" for i in range(cfg.g7_registered)]))
        plan.append(("small", [f"g7s-{i}" for i in range(10)]))
    if "g7" in phases or "g10" in phases:
        plan.append(("g10", g10_ids(cfg)))
    for name, ids in plan:
        done = seed(mesh, mesh.prefix(name), ids, cfg.seed_concurrency)
        out[name] = {"records": done.count, "seconds": round(done.seconds, 2)}
        log(f"seeded {done.count} records under {mesh.prefix(name)} ({done.puts_per_s:.0f}/s)")
    if plan:
        out["compacted_at"] = compact(mesh)
    return out


def g10_ids(cfg: Config) -> list[str]:
    return [f"g10-{i:05d}" for i in range(cfg.g7_sync_records)]


def measure(mesh: Mesh, cfg: Config, phases: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"goals": []}
    prefixes = {n: mesh.prefix(n) for n in ("empty", "big", "small", "g10", "g8", "g9")}
    results["seeded"] = seed_all(mesh, cfg, phases)
    steps: dict[str, Callable[[], tuple[list[dict[str, Any]], Any]]] = {
        "g6": lambda: g6(cfg),
        "g7": lambda: g7(mesh, cfg, prefixes),
        "g8": lambda: g8(mesh, cfg, prefixes["g8"]),
        "g9": lambda: g9(mesh, cfg, prefixes["g9"]),
        "g10": lambda: g10(mesh, cfg, prefixes["g10"], g10_ids(cfg)),
    }
    for phase in phases:
        log(f"{phase.upper()}:")
        t0 = time.monotonic()
        goals, detail = steps[phase]()
        results["goals"] += goals
        results[phase] = detail
        results.setdefault("phase_seconds", {})[phase] = round(time.monotonic() - t0, 1)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, short runs")
    ap.add_argument("--only", default=",".join(PHASES), help="comma-separated phases to run")
    ap.add_argument("--out", type=Path, default=BENCH / "results-mesh.json")
    args = ap.parse_args()
    stop_on_signals()
    cfg = Config.make(args.quick)
    phases = [p for p in PHASES if p in {x.strip().lower() for x in args.only.split(",")}]
    require_bench_ref()
    started = time.monotonic()
    results: dict[str, Any] = {"environment": environment(cfg, phases=list(phases))}
    with running_mesh() as mesh:
        log(f"etcd on {mesh.etcd_endpoint}; logs in {mesh.tmp}")
        results.update(measure(mesh, cfg, phases))
        results["pids"] = dict(mesh.pids)
    finish(results, args.out, started, print_report)
    return 0


if __name__ == "__main__":
    run_main(main)
