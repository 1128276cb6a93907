"""Data-plane parity on one router over a real etcd and the stub runtime: inference deadlines
(also through a peer, in a three-pod mesh), ModelReady on gRPC and REST, payload processors
posting to a real HTTP sink, per-model metrics, a runtime reached over unix sockets, the zone
of the router's node."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import model_mesh_pb2 as mm
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.procs import free_port
from tests.fixtures.router import RouterClients, RouterProc, clients
from tests.fixtures.runtimes import StubRuntimeProc
from tests.integration.router.test_mesh import PODS, holder_of, mesh_of, wait_for

StartRouter = Callable[..., AbstractContextManager[RouterProc]]
StartStub = Callable[..., AbstractContextManager[StubRuntimeProc]]

INFER = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(name: str, value: float = 1.0) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1], contents=v2.InferTensorContents(fp32_contents=[value])
    )
    return v2.ModelInferRequest(model_name=name, inputs=[tensor])


def register(c: RouterClients, model_id: str, key: dict[str, Any] | None = None) -> None:
    info = mm.ModelInfo(type="stub", path=f"models/{model_id}", key=json.dumps(key or {}))
    c.mesh.registerModel(mm.RegisterModelRequest(modelId=model_id, modelInfo=info), timeout=30)


def rest(
    router: RouterProc, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{router.rest_port}{path}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


REST_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [2.0]}]}
).encode()


# --- deadlines ---------------------------------------------------------------------------


@pytest.fixture
def slow_mesh(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> Iterator[tuple[RouterProc, StubRuntimeProc]]:
    with (
        start_stub_runtime() as stub,
        start_router(
            etcd_endpoint=etcd_server.endpoint,
            runtime_port=stub.port,
            env={"MM_INFERENCE_TIMEOUT_MS": "1500"},
        ) as router,
    ):
        with clients(router) as c:
            register(c, "slow", {"stub": {"infer_delay_ms": 4000}})
            register(c, "fast")
            c.infer.ModelInfer(infer_request("fast"), timeout=30)  # loaded
        yield router, stub


def test_a_request_past_the_default_deadline_ends_deadline_exceeded_naming_it(slow_mesh) -> None:
    router, _ = slow_mesh
    with clients(router) as c, futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        slow = pool.submit(c.infer.ModelInfer, infer_request("slow"), timeout=30)
        # While the slow request hangs in the runtime, another model keeps answering.
        time.sleep(0.3)
        fast_started = time.monotonic()
        assert c.infer.ModelInfer(infer_request("fast", 3.0), timeout=5).model_name == "fast"
        assert time.monotonic() - fast_started < 1.0
        with pytest.raises(grpc.RpcError) as err:
            slow.result()
        elapsed = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "inference on model slow" in err.value.details()
    assert "1500 ms (MM_INFERENCE_TIMEOUT_MS=1500)" in err.value.details()
    assert 1.4 < elapsed < 3.5


def test_the_header_overrides_the_deadline_and_the_model_keeps_working(slow_mesh) -> None:
    router, stub = slow_mesh
    with clients(router) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(
                infer_request("slow"), timeout=30, metadata=[("mm-timeout-ms", "500")]
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "500 ms (mm-timeout-ms=500)" in err.value.details()
        # A client deadline shorter than the default is the limit it gets.
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("slow"), timeout=0.8)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The same model, given the time it needs, answers: nothing was left broken.
        resp = c.infer.ModelInfer(
            infer_request("slow", 5.0), timeout=30, metadata=[("mm-timeout-ms", "10000")]
        )
        assert list(resp.outputs[0].contents.fp32_contents) == [5.0]
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("slow"), timeout=5, metadata=[("mm-timeout-ms", "x")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.stats()["loads"]["slow"] == 1


def test_rest_past_its_deadline_is_504_naming_the_limit(slow_mesh) -> None:
    router, _ = slow_mesh
    status, body = rest(router, "/v2/models/slow/infer", REST_BODY)
    assert status == 504
    assert "1500 ms (MM_INFERENCE_TIMEOUT_MS=1500)" in body["error"]
    status, body = rest(router, "/v2/models/slow/infer", REST_BODY, **{"mm-timeout-ms": "300"})
    assert status == 504 and "300 ms (mm-timeout-ms=300)" in body["error"]
    status, body = rest(router, "/v2/models/fast/infer", REST_BODY)
    assert status == 200 and body["outputs"][0]["data"] == [2.0]


def runtime_calls_ended(router: RouterProc, codes: tuple[str, ...]) -> tuple[int, float]:
    """How many of the router's runtime calls ended with one of `codes`, and their total ms."""
    count = total = 0.0
    for line in router.metrics().splitlines():
        if not any(f'code="{code}"' in line for code in codes):
            continue
        if line.startswith("modelmesh_invoke_model_milliseconds_count{"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modelmesh_invoke_model_milliseconds_sum{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(count), total


def test_the_clients_own_deadline_ends_the_work_done_for_it(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    """No header, no default: the client's gRPC deadline alone limits the request. The
    runtime call made for it ends with it, and its in-flight place is free again."""
    env = {"MM_MAX_INFLIGHT_PER_MODEL": "1"}
    with (
        start_stub_runtime() as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env) as router,
        clients(router) as c,
    ):
        info = mm.ModelInfo(
            type="stub", path="models/slow", key=json.dumps({"stub": {"infer_delay_ms": 4000}})
        )
        c.mesh.registerModel(
            mm.RegisterModelRequest(modelId="slow", modelInfo=info, loadNow=True, sync=True),
            timeout=30,
        )
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("slow"), timeout=0.8)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stopped = ("CANCELLED", "DEADLINE_EXCEEDED")
        wait_for(lambda: runtime_calls_ended(router, stopped)[0] == 1, timeout_s=1.5)
        assert runtime_calls_ended(router, stopped)[1] < 2000
        # The model's one in-flight place was given back when the client gave up: the next
        # request gets in (and runs out of its own time), it is not refused as too many.
        with pytest.raises(grpc.RpcError) as err:
            c.infer.ModelInfer(infer_request("slow"), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_deadline_travels_to_the_peer_holding_the_model_and_its_runtime(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    env = {"MM_INFERENCE_TIMEOUT_MS": "1000"}
    with (
        mesh_of(start_router, start_stub_runtime, etcd_server, env=env) as m,
        m.client("pod-a") as a,
    ):
        info = mm.ModelInfo(
            type="stub", path="models/slow", key=json.dumps({"stub": {"infer_delay_ms": 4000}})
        )
        a.mesh.registerModel(
            mm.RegisterModelRequest(modelId="slow", modelInfo=info, loadNow=True, sync=True),
            timeout=30,
        )
        holder = holder_of(m, "slow")
        ingress = next(pod for pod in PODS if pod != holder)
        with m.client(ingress) as c, pytest.raises(grpc.RpcError) as err:
            started = time.monotonic()
            c.infer.ModelInfer(infer_request("slow"), timeout=30)
        assert time.monotonic() - started < 2.0
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "1000 ms (MM_INFERENCE_TIMEOUT_MS=1000)" in err.value.details()
        # The holder's call to its runtime ended with the request, not 4 s later when the
        # runtime would have answered.
        stopped = ("CANCELLED", "DEADLINE_EXCEEDED")
        wait_for(lambda: runtime_calls_ended(m.routers[holder], stopped)[0] == 1, timeout_s=1.5)
        assert runtime_calls_ended(m.routers[holder], stopped)[1] < 2000
        assert m.infers(holder) == {"slow": 1}


# --- headers through a peer ------------------------------------------------------------------

ECHO = "tensorflow.serving.PredictionService/Predict"
PEER_HEADERS = {"mm-hop", "mm-exclude", "mm-balanced"}


def test_a_request_through_a_peer_reaches_the_runtime_with_the_clients_headers_only(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    """The hops between routers travel in one header that stops at the holder: its runtime
    gets the client's own headers and the model id, whether the payload names the model or
    only a header does (then the peer gets the id from the sender)."""
    stub_args = {pod: ("--record-headers", "--method-info", f"{ECHO}=1.1") for pod in PODS}
    with mesh_of(start_router, start_stub_runtime, etcd_server, stub_args=stub_args) as m:
        with m.client("pod-a") as a:
            register(a, "held")
            a.mesh.ensureLoaded(mm.EnsureLoadedRequest(modelId="held", sync=True), timeout=30)
        holder = holder_of(m, "held")
        ingress = next(pod for pod in PODS if pod != holder)
        tenant = [("x-tenant", "t1")]
        with m.client(ingress) as c:
            by_payload = c.infer.ModelInfer(infer_request("held", 3.0), metadata=tenant, timeout=30)
            by_header = c.infer.ModelInfer(
                infer_request("", 4.0), metadata=[*tenant, ("mm-model-id", "held")], timeout=30
            )
            predict = c.channel.unary_unary(f"/{ECHO}")
            spec = b"\x0a\x06\x0a\x04held"  # ModelSpec{name: "held"} in field 1
            echoed = predict(spec, metadata=[*tenant, ("mm-model-id", "held")], timeout=30)
        assert [
            o.contents.fp32_contents[0] for o in (by_payload.outputs[0], by_header.outputs[0])
        ] == [3.0, 4.0]
        assert echoed == spec
        assert m.infers(holder) == {"held": 3} and m.infers(ingress) == {}
        seen = set(m.stubs[holder].stats()["headers"]["held"])
        assert {"x-tenant", "mm-model-id"} <= seen
        assert not seen & PEER_HEADERS, seen


# --- ModelReady ---------------------------------------------------------------------------


def test_model_ready_agrees_on_grpc_and_rest(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        start_stub_runtime("--fail-pattern", "^broken$") as stub,
        start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port) as router,
        clients(router) as c,
    ):
        register(c, "idle")
        register(c, "broken")
        with pytest.raises(grpc.RpcError):
            c.infer.ModelInfer(infer_request("broken"), timeout=30)

        def grpc_ready(name: str) -> bool:
            return bool(c.infer.ModelReady(v2.ModelReadyRequest(name=name), timeout=5).ready)

        # Registered, not loaded: it can serve, the first request pays the load.
        assert grpc_ready("idle")
        assert rest(router, "/v2/models/idle/ready") == (200, {"name": "idle", "ready": True})
        assert rest(router, "/v2/models/idle/versions/1/ready")[0] == 200
        assert not grpc_ready("nope")
        status, body = rest(router, "/v2/models/nope/ready")
        assert (status, body) == (404, {"error": "model nope not found"})
        assert not grpc_ready("broken")
        status, body = rest(router, "/v2/models/broken/ready")
        assert status == 400 and "stub runtime refuses to load broken" in body["error"]
        assert stub.stats()["loads"].get("idle") is None  # asking never loads


# --- payload processors ------------------------------------------------------------------


@dataclass
class Sink:
    """A real HTTP server receiving payload POSTs; `hang` makes it never answer."""

    hang: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def sink_server(sink: Sink) -> Iterator[Sink]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            if sink.hang:
                sink.release.wait(60)
            sink.received.append(json.loads(data))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.release.set()
        server.shutdown()
        server.server_close()


def test_payloads_reach_the_sink_filtered_and_a_hanging_sink_slows_nothing(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    with (
        sink_server(Sink()) as good,
        sink_server(Sink(hang=True)) as hanging,
        start_stub_runtime() as stub,
    ):
        processors = (
            f"http://127.0.0.1:{good.port}/consumer/v2?fast#ModelInfer "
            f"http://127.0.0.1:{hanging.port}/all logger://*"
        )
        env = {"MM_PAYLOAD_PROCESSORS": processors, "MM_PAYLOAD_PROCESSORS_CAPACITY": "4"}
        with (
            start_router(etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env) as r,
            clients(r) as c,
        ):
            register(c, "fast")
            register(c, "other")
            sent = [infer_request("fast", float(i)) for i in range(3)]
            for request in sent:
                c.infer.ModelInfer(request, timeout=30)
            c.infer.ModelInfer(infer_request("other"), timeout=30)  # filtered out: model
            c.infer.ModelMetadata(v2.ModelMetadataRequest(name="fast"), timeout=30)  # method
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(good.received) < 6:
                time.sleep(0.05)
            time.sleep(0.3)  # nothing more arrives
            received = list(good.received)
            # The hanging sink holds its workers and its queue is full by now; requests go on.
            latencies = []
            for i in range(30):
                started = time.monotonic()
                c.infer.ModelInfer(infer_request("fast", float(i)), timeout=30)
                latencies.append(time.monotonic() - started)
            dropped = r.metric("modelmesh_payload_processor_dropped_total")
    assert len(received) == 6, received
    assert {p["modelid"] for p in received} == {"fast"}
    assert {p["method"] for p in received} == {"inference.GRPCInferenceService/ModelInfer"}
    requests = [p for p in received if p["kind"] == "request"]
    responses = [p for p in received if p["kind"] == "response"]
    assert len(requests) == len(responses) == 3
    assert sorted(base64.b64decode(p["data"]) for p in requests) == sorted(
        m.SerializeToString() for m in sent
    )
    assert {p["status"] for p in responses} == {"OK"}
    assert {p["id"] for p in requests} == {p["id"] for p in responses}
    answers = [v2.ModelInferResponse.FromString(base64.b64decode(p["data"])) for p in responses]
    assert sorted(a.outputs[0].contents.fp32_contents[0] for a in answers) == [0.0, 1.0, 2.0]
    assert max(latencies) < 0.5, latencies
    assert dropped >= 30  # request + response of each of the last 30, less a full queue
    assert "payload request" in r.log.read_text()  # the logger processor


# --- metrics ------------------------------------------------------------------------------


def test_per_model_labels_only_when_enabled(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    for per_model in (False, True):
        with start_stub_runtime() as stub:
            port = free_port()
            flag = ";per_model_metrics=true" if per_model else ""
            env = {"MM_METRICS": f"prometheus:port={port};scheme=http{flag}"}
            with (
                start_router(
                    etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env
                ) as router,
                clients(router) as c,
            ):
                c.mesh.setVModel(
                    mm.SetVModelRequest(
                        vModelId="iris", targetModelId="iris__isvc-0123456789",
                        modelInfo=mm.ModelInfo(type="stub", path="p"), autoDeleteTargetModel=True,
                    ),
                    timeout=10,
                )  # fmt: skip
                c.infer.ModelInfer(infer_request("iris"), timeout=30)
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    text = resp.read().decode()
        lines = [line for line in text.splitlines() if line.startswith("modelmesh_")]

        def samples(name: str, lines: list[str] = lines) -> list[str]:
            return [line for line in lines if line.startswith(f"modelmesh_{name}_count")]

        model = ',modelId="iris__isvc-0123456789",vModelId="iris"' if per_model else ""
        call = f'code="OK",method="ModelInfer"{model}'
        assert samples("api_request_milliseconds") == [
            f"modelmesh_api_request_milliseconds_count{{{call}}} 1.0"
        ]
        assert samples("invoke_model_milliseconds") == [
            f"modelmesh_invoke_model_milliseconds_count{{{call}}} 1.0"
        ]
        queue = f"{{{model.lstrip(',')}}}" if per_model else ""
        assert samples("req_queue_delay_milliseconds") == [
            f"modelmesh_req_queue_delay_milliseconds_count{queue} 1.0"
        ]
        assert any("modelId=" in line for line in lines) == per_model


# --- unix sockets -------------------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mm-uds-", dir="/tmp"))  # unix paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_router_serves_a_runtime_over_unix_sockets(
    start_router: StartRouter,
    start_stub_runtime: StartStub,
    etcd_server: EtcdServer,
    socket_dir: Path,
) -> None:
    sock = socket_dir / "grpc.sock"
    with start_stub_runtime("--socket", str(sock)) as stub:
        env = {
            "INTERNAL_GRPC_SOCKET_PATH": str(sock),
            "INTERNAL_SERVING_GRPC_SOCKET_PATH": str(sock),
        }
        closed = free_port()  # nothing listens here: the TCP port must not be what is used
        with (
            start_router(
                etcd_endpoint=etcd_server.endpoint,
                runtime_port=closed,
                serving_port=closed,
                env=env,
            ) as router,
            clients(router) as c,
        ):
            register(c, "uds")
            resp = c.infer.ModelInfer(infer_request("uds", 4.0), timeout=30)
            assert list(resp.outputs[0].contents.fp32_contents) == [4.0]
        assert stub.stats()["infers"] == {"uds": 1}


# --- zones --------------------------------------------------------------------------------


@contextmanager
def fake_kube_api(nodes: dict[str, dict[str, Any]], status: int = 200) -> Iterator[str]:
    """Answers GET /api/v1/nodes/<name> like an API server (a real HTTP server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            node = nodes.get(name)
            code = status if node is not None else 404
            body = json.dumps(node if code == 200 else {"kind": "Status", "code": code}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def published_zone(etcd: EtcdServer, router: RouterProc) -> str:
    key = f"{router.root_prefix}/mm/modelmesh-serving/instances/{router.instance_id}"
    out = subprocess.run(
        ["etcdctl", f"--endpoints={etcd.endpoint}", "get", key, "--print-value-only"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return str(json.loads(out).get("zone", ""))


def test_the_router_takes_its_zone_from_its_node(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    node = {"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}
    with fake_kube_api({"node-a": node}) as api, start_stub_runtime() as stub:
        env = {"NODE_NAME": "node-a", "MM_KUBE_API_URL": api}
        with start_router(
            etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env
        ) as router:
            assert published_zone(etcd_server, router) == "zone-a"
        # MM_ZONE wins; nothing is read.
        env = {"NODE_NAME": "node-a", "MM_KUBE_API_URL": api, "MM_ZONE": "set-by-hand"}
        with start_router(
            etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env
        ) as router:
            assert published_zone(etcd_server, router) == "set-by-hand"


def test_without_node_access_the_router_runs_zoneless_and_says_why(
    start_router: StartRouter, start_stub_runtime: StartStub, etcd_server: EtcdServer
) -> None:
    node = {"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}
    with fake_kube_api({"node-a": node}, status=403) as api, start_stub_runtime() as stub:
        env = {"NODE_NAME": "node-a", "MM_KUBE_API_URL": api}
        with start_router(
            etcd_endpoint=etcd_server.endpoint, runtime_port=stub.port, env=env
        ) as router:
            assert published_zone(etcd_server, router) == ""
            assert "answered 403 (the pod's service account needs get on nodes)" in (
                router.log.read_text()
            )
