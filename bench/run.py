"""mmesh router benchmark: goals G1-G5 of shared/reference/performance.md, as ratios
against baselines measured in the same run.

    .venv/bin/python bench/run.py [--quick]

Starts etcd, the stub runtime, the router (`python -m mmesh.router`) and bench-ref's
pure pass-through proxy (pointed at the stub), all on 127.0.0.1 random ports; runs the
measurements; prints a table; writes bench/results.json; stops every process by pid.
See bench/README.md for what each number means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from etcdstats import EtcdCounters, current_revision, kv_rpcs, writes_between
from harness import (
    BENCH,
    GOAL_KEYS,
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
from loadgen import METHOD, OPTIONS, request_bytes
from procs import Processes, http_text, wait_quiet

from mmesh.core.proto import model_mesh_pb2 as mm
from mmesh.core.proto import model_mesh_pb2_grpc as mm_grpc
from mmesh.local.processes import free_port, http_ok, port_open

WARM_MODEL = "bench-warm"
TARGETS = ("direct", "proxy", "router")


@dataclass(frozen=True)
class Config:
    quick: bool
    reps: int
    warmup_s: float
    duration_s: float
    large_concurrency: int
    g4_requests: int
    g4_cold_models: int
    g5_models: int
    g5_concurrent: int
    load_delay_ms: int
    quiet_min_idle: float
    quiet_max_wait_s: float

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, 1, 0.3, 1.0, 1, 2000, 3, 5, 100, 200, 0.8, 1.0)
        return cls(False, 3, 1.0, 5.0, 1, 10_000, 10, 20, 100, 200, 0.9, 4.0)


# --------------------------------------------------------------------------- processes


@dataclass
class Stack:
    tmp: Path
    procs: Processes
    etcd_port: int = 0
    stub_port: int = 0
    stats_port: int = 0
    router_port: int = 0
    rest_port: int = 0
    decode_port: int = 0
    proxy_port: int = 0
    root_prefix: str = field(default_factory=lambda: f"/mmbench-{uuid.uuid4().hex[:8]}")
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    def port(self, target: str) -> int:
        return {"direct": self.stub_port, "proxy": self.proxy_port, "router": self.router_port}[
            target
        ]

    def stub_stats(self) -> dict[str, Any]:
        return dict(json.loads(http_text(f"http://127.0.0.1:{self.stats_port}/stats")))

    def decode_counts(self) -> dict[str, int]:
        body = json.loads(http_text(f"http://127.0.0.1:{self.decode_port}/"))
        return {str(k): int(v) for k, v in body["counts"].items()}


def start_stub(stack: Stack, cfg: Config) -> None:
    stack.stub_port, stack.stats_port = free_port(), free_port()
    cmd = [PY, "-m", "mmesh.stubs.runtime", "--port", str(stack.stub_port)]
    cmd += ["--stats-port", str(stack.stats_port), "--load-delay-ms", str(cfg.load_delay_ms)]
    proc = stack.procs.start("stub", cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{stack.stats_port}/stats"
    stack.procs.wait_ready(proc, lambda: port_open(stack.stub_port) and http_ok(url))
    stack.pids["stub"] = proc.pid


def start_router(stack: Stack) -> None:
    ports = [free_port() for _ in range(6)]
    stack.router_port, stack.rest_port, stack.decode_port = ports[0], ports[1], ports[4]
    kv_store = {"endpoints": f"http://{stack.etcd_endpoint}", "root_prefix": stack.root_prefix}
    env = {
        "MM_INSTANCE_ID": "mmbench-r1",
        "KV_STORE": "etcd:" + json.dumps(kv_store),
        "INTERNAL_GRPC_PORT": str(stack.stub_port),
        "INTERNAL_SERVING_GRPC_PORT": str(stack.stub_port),
        "MM_SVC_GRPC_PORT": str(ports[0]),
        "REST_PROXY_LISTEN_PORT": str(ports[1]),
        "MM_METRICS": f"prometheus:port={ports[2]};scheme=http",
        "MM_PROBE_PORT": str(ports[3]),
        "MM_INTERNAL_GRPC_PORT": str(ports[5]),
        "MM_PRESTOP_WAIT_PORT": "0",
        "SHUTDOWN_TIMEOUT_MS": "5000",
        **install_hooks(stack.tmp / "hook", {"decode": stack.decode_port}),
    }
    proc = stack.procs.start("router", [PY, "-m", "mmesh.router"], env=env, cwd=ROOT)
    stack.procs.wait_ready(proc, lambda: http_ok(f"http://127.0.0.1:{ports[3]}/ready"))
    stack.procs.wait_ready(proc, lambda: port_open(stack.decode_port), timeout_s=5)
    stack.pids["router"] = proc.pid


def start_proxy(stack: Stack) -> None:
    stack.proxy_port = free_port()
    cmd = [PY, REF / "proxy.py", "--mode", "aio", "--bind", f"127.0.0.1:{stack.proxy_port}"]
    cmd += ["--target", f"127.0.0.1:{stack.stub_port}"]
    proc = stack.procs.start("proxy", cmd, cwd=REF)
    stack.procs.wait_ready(proc, lambda: port_open(stack.proxy_port))
    stack.pids["proxy"] = proc.pid


@contextmanager
def running_stack(cfg: Config) -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="mmbench-"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    data_dir = Path(tempfile.mkdtemp(prefix="mmbench-etcd-", dir=shm))
    stack = Stack(tmp, Processes(tmp))
    ok = False
    try:
        cport = free_port()
        etcd = start_etcd(stack.procs, "mmbench", data_dir, (cport, free_port()))
        stack.etcd_port, stack.pids["etcd"] = cport, etcd.pid
        start_stub(stack, cfg)
        start_router(stack)
        start_proxy(stack)
        yield stack
        ok = True
    finally:
        stack.procs.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)


# --------------------------------------------------------------------------- clients


def register(stack: Stack, model_ids: list[str], *, load_now: bool = False) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.router_port}") as channel:
        mesh = mm_grpc.ModelMeshStub(channel)
        for model_id in model_ids:
            mesh.registerModel(
                mm.RegisterModelRequest(
                    modelId=model_id,
                    modelInfo=mm.ModelInfo(type="stub", path=f"/models/{model_id}"),
                    loadNow=load_now,
                    sync=load_now,
                ),
                timeout=30,
            )


def loadgen(
    stack: Stack,
    target: str,
    *,
    payload: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    requests: int = 0,
    label: str = "",
) -> dict[str, Any]:
    watch = {stack.pids[n]: n for n in ("router", "proxy", "stub")}
    cmd = [PY, str(BENCH / "loadgen.py"), "--target", f"127.0.0.1:{stack.port(target)}"]
    cmd += ["--model", WARM_MODEL, "--payload", payload, "-c", str(concurrency)]
    cmd += ["--warmup", str(warmup_s), "--duration", str(duration_s)]
    cmd += ["--requests", str(requests), "--watch", ",".join(str(p) for p in watch)]
    cmd += ["--label", label or target]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["cpu_us_per_req"] = {watch[int(p)]: v for p, v in out["cpu_us_per_req"].items()}
    out["cpu_s"] = {watch[int(p)]: v for p, v in out["cpu_s"].items()}
    if out["errors"]:
        raise RuntimeError(f"{target}: {out['errors']} errors, first: {out['first_error']}")
    return out


def quiet(cfg: Config) -> float:
    return wait_quiet(min_idle=cfg.quiet_min_idle, window_s=0.5, max_wait_s=cfg.quiet_max_wait_s)


def interleaved(
    stack: Stack, cfg: Config, *, payload: str, concurrency: int, targets: tuple[str, ...]
) -> list[dict[str, dict[str, Any]]]:
    """`reps` rounds; each round runs every target once, in an order rotated per round."""
    rounds = []
    for rep in range(cfg.reps):
        order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
        got: dict[str, dict[str, Any]] = {}
        for target in order:
            idle = quiet(cfg)
            res = loadgen(
                stack,
                target,
                payload=payload,
                concurrency=concurrency,
                warmup_s=cfg.warmup_s,
                duration_s=cfg.duration_s,
                label=f"{payload}-c{concurrency}-{target}-r{rep}",
            )
            res["idle_before"] = round(idle, 3)
            got[target] = res
            log(
                f"  rep {rep + 1} {target:6} p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f}"
                f" ms  {res['rps']:.0f} req/s  cpu/req {cpu_in_path(res, target)} us"
                f"  (idle before {idle:.0%})"
            )
        rounds.append(got)
    return rounds


def cpu_in_path(res: dict[str, Any], target: str) -> float | None:
    """CPU per request of the hop under test (router or proxy); the stub's for direct."""
    role = {"direct": "stub", "proxy": "proxy", "router": "router"}[target]
    value = res["cpu_us_per_req"].get(role)
    return float(value) if value is not None else None


# --------------------------------------------------------------------------- goals


def raw_rows(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Median over rounds of each target's numbers."""
    rows: dict[str, dict[str, float | None]] = {}
    for target in rounds[0]:
        runs = [r[target] for r in rounds]

        def med(get: Callable[[dict[str, Any]], Any], runs: list[dict[str, Any]] = runs) -> Any:
            vals = [v for v in (get(x) for x in runs) if v is not None]
            return round(median(vals), 4) if vals else None

        rows[target] = {
            "p50_ms": med(lambda x: x["p50_ms"]),
            "p99_ms": med(lambda x: x["p99_ms"]),
            "rps": med(lambda x: x["rps"]),
            "hop_cpu_us_per_req": med(lambda x, t=target: cpu_in_path(x, t)),
            "stub_cpu_us_per_req": med(lambda x: x["cpu_us_per_req"].get("stub")),
        }
    return rows


def g1(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for key, limit in (("p50_ms", 1.2), ("p99_ms", 1.5)):
        per_rep = [
            ratio(r["router"][key] - r["direct"][key], r["proxy"][key] - r["direct"][key])
            for r in rounds
        ]
        value = median(per_rep)
        out.append(
            goal(
                f"G1 hop overhead {key[:3]} (router-direct)/(proxy-direct)",
                value,
                f"<= {limit}",
                value <= limit,
                per_rep=per_rep,
            )
        )
    return out


def g2(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rps = [ratio(r["router"]["rps"], r["proxy"]["rps"]) for r in rounds]
    cpu = [
        ratio(cpu_in_path(r["router"], "router") or 0, cpu_in_path(r["proxy"], "proxy") or 0)
        for r in rounds
    ]
    return [
        goal(
            "G2 throughput c=16 router/proxy req/s",
            median(rps),
            ">= 0.9",
            median(rps) >= 0.9,
            per_rep=rps,
        ),
        goal(
            "G2 CPU/req c=16 router/proxy", median(cpu), "<= 1.25", median(cpu) <= 1.25, per_rep=cpu
        ),
    ]


def g3(rounds: list[dict[str, dict[str, Any]]], decodes: dict[str, Any]) -> list[dict[str, Any]]:
    cpu = [
        ratio(cpu_in_path(r["router"], "router") or 0, cpu_in_path(r["proxy"], "proxy") or 0)
        for r in rounds
    ]
    full = decodes["warm_request_decodes"]
    counted = decodes["hook_live"]
    return [
        goal(
            "G3 CPU/req 1 MiB router/proxy",
            median(cpu),
            "<= 1.15",
            median(cpu) <= 1.15,
            per_rep=cpu,
        ),
        goal(
            "G3 full ModelInferRequest decodes (warm)",
            float(full),
            "== 0 (hook verified live)",
            full == 0 and counted,
            detail=decodes,
        ),
    ]


# --------------------------------------------------------------------------- G3 decode count


def hook_self_test() -> bool:
    """The wrapper really counts decodes of the upb ModelInferRequest class. Run here, in
    the orchestrator (which never decodes one otherwise), on the same generated class."""
    import decode_hook

    from mmesh.core.proto import grpc_predict_v2_pb2 as v2

    decode_hook._wrap_class(v2.ModelInferRequest, "selftest")
    data = request_bytes("small", "x")
    v2.ModelInferRequest.FromString(data)
    v2.ModelInferRequest().ParseFromString(data)
    v2.ModelInferRequest().MergeFromString(data)
    return all(
        decode_hook.COUNTS[f"selftest.{name}"] == 1
        for name in ("FromString", "ParseFromString", "MergeFromString")
    )


def rest_infer(stack: Stack) -> bool:
    import urllib.request

    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "predict",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "data": [1.0, 2.0, 3.0, 4.0],
                }
            ]
        }
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.rest_port}/v2/models/{WARM_MODEL}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bool(resp.status == 200)


def decode_report(stack: Stack, warm_counts: dict[str, int]) -> dict[str, Any]:
    """Counts after the warm phases, then a REST call as positive control: the REST face
    parses the runtime's answer (one ModelInferResponse.ParseFromString) in the router."""
    before = stack.decode_counts()
    rest_ok = rest_infer(stack)
    after = stack.decode_counts()
    key = "inference.ModelInferResponse.ParseFromString"
    live = rest_ok and after.get(key, 0) - before.get(key, 0) == 1
    req = sum(v for k, v in warm_counts.items() if k.startswith("inference.ModelInferRequest"))
    return {
        "warm_request_decodes": req,
        "counts_after_warm_phases": warm_counts,
        "hook_self_test": hook_self_test(),
        "hook_live": bool(live),
        "positive_control": {"rest_infer_ok": rest_ok, "before": before, "after": after},
    }


# --------------------------------------------------------------------------- G4


def etcd_window(stack: Stack, action: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run `action`; what etcd served meanwhile (counters) and which keys were written."""
    rev0 = current_revision(stack.etcd_endpoint)
    m0 = EtcdCounters.scrape(stack.etcd_port)
    t0 = time.monotonic()
    result = action()
    elapsed = time.monotonic() - t0
    m1 = EtcdCounters.scrape(stack.etcd_port)
    rev1 = current_revision(stack.etcd_endpoint)
    diff = m1.minus(m0)
    writes = writes_between(stack.etcd_endpoint, rev0, rev1)
    window = {"seconds": round(elapsed, 2), **diff, "kv_rpcs": kv_rpcs(diff)}
    window["writes_by_key"] = dict(writes)
    return result, window


def g4(stack: Stack, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    quiet(cfg)
    res, warm = etcd_window(
        stack,
        lambda: loadgen(
            stack,
            "router",
            payload="small",
            concurrency=16,
            warmup_s=0,
            duration_s=0,
            requests=cfg.g4_requests,
            label="g4-warm",
        ),
    )
    sent = int(res["total"])
    _, idle = etcd_window(stack, lambda: time.sleep(warm["seconds"]))
    heartbeats = min(
        warm["grpc_messages"].get("KV/Put", 0), warm["writes_by_key"].get("instances:put", 0)
    )
    request_driven = warm["kv_rpcs"] - heartbeats
    warm["instance_heartbeat_puts"] = heartbeats
    warm["request_driven_kv_rpcs"] = request_driven
    log(f"  warm: {sent} requests, etcd window {warm}; idle window {idle}")
    cold_ids = [f"bench-g4-{i:03d}" for i in range(cfg.g4_cold_models)]
    register(stack, cold_ids)
    time.sleep(1.0)  # let the registration writes and their watch events settle
    _, cold = etcd_window(stack, lambda: cold_requests(stack, cold_ids, settle_s=1.5))
    txn = cold["grpc_messages"].get("KV/Txn", 0) / len(cold_ids)
    log(f"  cold: {len(cold_ids)} loads, etcd window {cold}")
    goals = [
        goal(
            "G4 etcd KV RPCs per warm inference",
            request_driven / sent,
            "== 0",
            request_driven == 0,
            requests=sent,
            all_kv_rpcs=warm["kv_rpcs"],
            instance_heartbeat_puts=heartbeats,
            idle_window_kv_rpcs=idle["kv_rpcs"],
        ),
        goal(
            "G4 etcd txns per cold load",
            txn,
            "<= 2",
            txn <= 2,
            loads=len(cold_ids),
            ranges_per_load=cold["grpc_messages"].get("KV/Range", 0) / len(cold_ids),
            registry_writes_per_load=cold["writes_by_key"].get("registry:put", 0) / len(cold_ids),
        ),
    ]
    return goals, {"warm_requests": sent, "warm": warm, "idle_same_length": idle, "cold": cold}


def cold_requests(stack: Stack, model_ids: list[str], *, settle_s: float) -> list[float]:
    """One request per model (each a first request, so a load), sequential; seconds each."""
    lat = []
    with grpc.insecure_channel(f"127.0.0.1:{stack.router_port}", options=OPTIONS) as ch:
        call = ch.unary_unary(METHOD)
        for model_id in model_ids:
            payload = request_bytes("small", model_id)
            t0 = time.perf_counter()
            call(payload, timeout=30)
            lat.append(time.perf_counter() - t0)
    time.sleep(settle_s)
    return lat


# --------------------------------------------------------------------------- G5


def cold_and_warm(stack: Stack, model_ids: list[str]) -> tuple[list[float], list[float]]:
    """Per model: the first request (cold: a load) and then a second one (warm), timed by
    the same client."""
    cold, warm = [], []
    with grpc.insecure_channel(f"127.0.0.1:{stack.router_port}", options=OPTIONS) as ch:
        call = ch.unary_unary(METHOD)
        grpc.channel_ready_future(ch).result(timeout=10)
        call(request_bytes("small", WARM_MODEL), timeout=30)  # connection warm
        for model_id in model_ids:
            payload = request_bytes("small", model_id)
            t0 = time.perf_counter()
            call(payload, timeout=30)
            t1 = time.perf_counter()
            call(payload, timeout=30)
            t2 = time.perf_counter()
            cold.append((t1 - t0) * 1e3)
            warm.append((t2 - t1) * 1e3)
    return cold, warm


def herd(stack: Stack, model_id: str, n: int) -> tuple[int, list[str]]:
    payload = request_bytes("small", model_id)
    with grpc.insecure_channel(f"127.0.0.1:{stack.router_port}", options=OPTIONS) as ch:
        call = ch.unary_unary(METHOD)
        grpc.channel_ready_future(ch).result(timeout=10)
        futures = [call.future(payload, timeout=60) for _ in range(n)]
        ok, errors = 0, []
        for f in futures:
            try:
                f.result()
                ok += 1
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    return ok, errors


def g5(stack: Stack, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ids = [f"bench-g5-{i:03d}" for i in range(cfg.g5_models)]
    register(stack, ids)
    time.sleep(1.0)
    quiet(cfg)
    cold, warm = cold_and_warm(stack, ids)
    cold_p50, warm_p50 = median(cold), median(warm)
    limit = cfg.load_delay_ms + 1.2 * warm_p50 + 5
    herd_id = "bench-g5-herd"
    register(stack, [herd_id])
    time.sleep(0.5)
    loads0 = Counter(stack.stub_stats()["loads"])
    ok, errors = herd(stack, herd_id, cfg.g5_concurrent)
    loads1 = Counter(stack.stub_stats()["loads"])
    herd_loads = loads1[herd_id] - loads0[herd_id]
    other_loads = sum((loads1 - loads0).values()) - herd_loads
    log(
        f"  cold p50 {cold_p50:.1f} ms, warm p50 {warm_p50:.3f} ms; herd {ok} ok, "
        f"{herd_loads} loads"
    )
    goals = [
        goal(
            "G5 cold-request p50 (ms)",
            cold_p50,
            f"<= D + 1.2*warm p50 + 5 = {limit:.1f}",
            cold_p50 <= limit,
            models=len(ids),
            warm_p50_ms=warm_p50,
            load_delay_ms=cfg.load_delay_ms,
        ),
        goal(
            f"G5 loadModel calls for {cfg.g5_concurrent} concurrent first requests",
            float(herd_loads),
            "== 1",
            herd_loads == 1 and other_loads == 0,
        ),
        goal(
            f"G5 successes of {cfg.g5_concurrent} concurrent first requests",
            float(ok),
            f"== {cfg.g5_concurrent}",
            ok == cfg.g5_concurrent,
            errors=errors[:5],
        ),
    ]
    detail = {
        "cold_ms": [round(x, 3) for x in cold],
        "warm_ms": [round(x, 3) for x in warm],
        "cold_p50_ms": cold_p50,
        "cold_max_ms": max(cold),
        "warm_p50_ms": warm_p50,
        "limit_ms": limit,
        "herd_ok": ok,
        "herd_loads": herd_loads,
        "other_loads_meanwhile": other_loads,
    }
    return goals, detail


# --------------------------------------------------------------------------- report


def print_report(results: dict[str, Any]) -> None:
    lines = ["", "Goals (median over repetitions of the per-repetition ratio)", ""]
    lines += goal_lines(
        results["goals"],
        widths=(58, 10, 34),
        rule=112,
        indent=59,
        per_rep="per rep",
        hidden=GOAL_KEYS | {"detail"},
    )
    for phase, rows in results["raw"].items():
        lines += ["", f"Raw numbers, {phase} (median over repetitions)", ""]
        head = f"{'target':8} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9}"
        lines.append(head + f" {'hop CPU us/req':>15} {'stub CPU us/req':>16}")
        for target, row in rows.items():
            lines.append(
                f"{target:8} {fmt(row['p50_ms']):>9} {fmt(row['p99_ms']):>9}"
                f" {fmt(row['rps'], 0):>9} {fmt(row['hop_cpu_us_per_req'], 1):>15}"
                f" {fmt(row['stub_cpu_us_per_req'], 1):>16}"
            )
    lines.append("\n(hop CPU = router or proxy process; for 'direct' it is the stub itself)")
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- main


def warm_up(stack: Stack) -> None:
    register(stack, [WARM_MODEL], load_now=True)
    for target in TARGETS:  # the model answers on every path before anything is timed
        with grpc.insecure_channel(f"127.0.0.1:{stack.port(target)}", options=OPTIONS) as ch:
            ch.unary_unary(METHOD)(request_bytes("small", WARM_MODEL), timeout=30)


def measure(stack: Stack, cfg: Config) -> dict[str, Any]:
    warm_up(stack)
    raw: dict[str, Any] = {}
    rounds: dict[str, Any] = {}
    phases = (
        ("small c=1", "small", 1),
        ("small c=16", "small", 16),
        (f"1 MiB c={cfg.large_concurrency}", "large", cfg.large_concurrency),
    )
    for name, payload, conc in phases:
        log(f"{name}: {cfg.reps} rounds x {TARGETS}")
        rounds[name] = interleaved(stack, cfg, payload=payload, concurrency=conc, targets=TARGETS)
        raw[name] = raw_rows(rounds[name])
    warm_counts = stack.decode_counts()
    decodes = decode_report(stack, warm_counts)
    goals = g1(rounds["small c=1"]) + g2(rounds["small c=16"])
    goals += g3(rounds[phases[2][0]], decodes)
    log("G4: etcd during warm traffic and cold loads")
    g4_goals, g4_detail = g4(stack, cfg)
    log("G5: cold loads")
    g5_goals, g5_detail = g5(stack, cfg)
    at_end = stack.decode_counts()
    for g in goals:
        if g["goal"].startswith("G3 full"):
            g["whole_run_request_decodes"] = sum(
                v for k, v in at_end.items() if k.startswith("inference.ModelInferRequest")
            )
    return {
        "goals": goals + g4_goals + g5_goals,
        "raw": raw,
        "runs": rounds,
        "g3_decodes": decodes,
        "g4": g4_detail,
        "g5": g5_detail,
        "decode_counts_at_end": at_end,
        "stub_stats_at_end": {
            k: v for k, v in stack.stub_stats().items() if k in ("loads", "failed_loads")
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, short runs")
    ap.add_argument("--out", type=Path, default=BENCH / "results.json")
    args = ap.parse_args()
    stop_on_signals()
    cfg = Config.make(args.quick)
    require_bench_ref()
    started = time.monotonic()
    results: dict[str, Any] = {"environment": environment(cfg)}
    with running_stack(cfg) as stack:
        results["pids"] = dict(stack.pids)
        log(f"started {stack.pids} (logs in {stack.tmp})")
        results.update(measure(stack, cfg))
    finish(results, args.out, started, print_report)
    return 0


if __name__ == "__main__":
    run_main(main)
