"""A stand-in model runtime for router tests and benchmarks.

One gRPC port serves both `mmesh.ModelRuntime` (what the router drives) and the V2
`inference.GRPCInferenceService` data plane (what the router forwards to). Loads take a
configurable time, report a configurable size, and fail on demand; inference echoes the
inputs back as outputs and answers NOT_FOUND for models that are not loaded, as a real
server does. A tiny HTTP endpoint reports counters so tests can assert on what happened.

A model's modelKey may carry per-model overrides as JSON:
`{"stub": {"size": 1000000, "delay_ms": 50, "fail": "message", "infer_delay_ms": 2000}}`
(`infer_delay_ms`: every inference of that model sleeps this long first).
With `--socket PATH` it also listens on a unix socket (runtimes with `unix:` endpoints).

As the container of a custom ServingRuntime it binds `--host` (default: env STUB_HOST, else
127.0.0.1). With `--require-local-files` a load fails unless modelPath names files on local
disk (what the storage helper hands it); each load's path, key and bytes found there are
reported under `received` in the stats.

With `--first-load-delay-ms N` the first load after start takes N ms more and loads that
arrive meanwhile wait for it, as a model server that starts its workers on its first load.

With `--record-headers` the names of the headers of each model's last inference are
reported under `headers` (what a router passed on to its runtime).

`--method-info SERVICE/METHOD=1.1` (repeatable) makes it report one more data-plane method
with that model-id injection path in runtimeStatus, as the OVMS and TorchServe adapters do
(`tensorflow.serving.PredictionService/Predict=1.1`); it answers that method by echoing the
request bytes, NOT_FOUND unless the model named at that path is loaded.

It uses the synchronous gRPC server on purpose: the stub should cost as little CPU per
request as a fast native runtime would, and the sync server is the cheaper one here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.core.proto import grpc_predict_v2_pb2_grpc as v2_grpc
from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from mmesh.router.wire import read_string_field

logger = logging.getLogger("mmesh.stub_runtime")


@dataclass
class StubConfig:
    capacity_bytes: int = 512 * 1024 * 1024
    default_size_bytes: int = 1_000_000
    size_bytes: int = 1_000_000
    load_delay_ms: int = 0
    loading_concurrency: int = 1
    load_timeout_ms: int = 30_000
    fail_pattern: str | None = None
    require_local_files: bool = False
    method_infos: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Extra data-plane methods (`service/method`) -> model-id injection path."""
    record_headers: bool = False
    first_load_delay_ms: int = 0
    """The first load after start takes this long more, and loads that arrive meanwhile wait
    for it (a model server starting its workers)."""


@dataclass
class StubState:
    """Everything the stub knows; guarded by `lock` (the sync server runs many threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: dict[str, int] = field(default_factory=dict)
    infer_delay_s: dict[str, float] = field(default_factory=dict)
    loads: Counter[str] = field(default_factory=Counter)
    unloads: Counter[str] = field(default_factory=Counter)
    infers: Counter[str] = field(default_factory=Counter)
    failed_loads: Counter[str] = field(default_factory=Counter)
    received: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Model -> the header names of its last inference (with --record-headers)."""
    status_calls: int = 0
    started_loading: bool = False
    warm: threading.Event = field(default_factory=threading.Event)
    loading_now: int = 0
    max_loading: int = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "loaded": dict(self.loaded),
                "loads": dict(self.loads),
                "unloads": dict(self.unloads),
                "infers": dict(self.infers),
                "failed_loads": dict(self.failed_loads),
                "received": dict(self.received),
                "headers": dict(self.headers),
                "status_calls": self.status_calls,
                "max_loading": self.max_loading,
            }


def _overrides(model_key: str) -> dict[str, Any]:
    try:
        key = json.loads(model_key) if model_key else {}
    except json.JSONDecodeError:
        return {}
    stub = key.get("stub") if isinstance(key, dict) else None
    return stub if isinstance(stub, dict) else {}


class StubRuntime(rt_grpc.ModelRuntimeServicer):
    def __init__(self, config: StubConfig, state: StubState) -> None:
        self.config = config
        self.state = state

    def runtimeStatus(
        self, request: rt.RuntimeStatusRequest, context: grpc.ServicerContext
    ) -> rt.RuntimeStatusResponse:
        with self.state.lock:
            self.state.status_calls += 1
            self.state.loaded.clear()
        resp = rt.RuntimeStatusResponse(
            status=rt.RuntimeStatusResponse.READY,
            capacityInBytes=self.config.capacity_bytes,
            maxLoadingConcurrency=self.config.loading_concurrency,
            modelLoadingTimeoutMs=self.config.load_timeout_ms,
            defaultModelSizeInBytes=self.config.default_size_bytes,
            runtimeVersion="stub-1",
        )
        for method in ("ModelInfer", "ModelMetadata"):
            resp.methodInfos[f"inference.GRPCInferenceService/{method}"].idInjectionPath.append(1)
        for method, path in self.config.method_infos.items():
            resp.methodInfos[method].idInjectionPath.extend(path)
        return resp

    def loadModel(
        self, request: rt.LoadModelRequest, context: grpc.ServicerContext
    ) -> rt.LoadModelResponse:
        over = _overrides(request.modelKey)
        on_disk = _bytes_under(request.modelPath)
        with self.state.lock:
            self.state.received[request.modelId] = {
                "path": request.modelPath,
                "key": request.modelKey,
                "type": request.modelType,
                "bytes": on_disk,
            }
        if self.config.require_local_files and on_disk is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stub runtime: model path {request.modelPath!r} is not on local disk",
            )
        with self.state.lock:
            self.state.loads[request.modelId] += 1
            self.state.loading_now += 1
            self.state.max_loading = max(self.state.max_loading, self.state.loading_now)
        try:
            self._warm_up()
            time.sleep(float(over.get("delay_ms", self.config.load_delay_ms)) / 1000)
        finally:
            with self.state.lock:
                self.state.loading_now -= 1
        failure = over.get("fail") or self._pattern_failure(request.modelId)
        if failure:
            with self.state.lock:
                self.state.failed_loads[request.modelId] += 1
            context.abort(grpc.StatusCode.INTERNAL, str(failure))
        size = int(over.get("size", self.config.size_bytes))
        with self.state.lock:
            self.state.loaded[request.modelId] = size
            self.state.infer_delay_s[request.modelId] = float(over.get("infer_delay_ms", 0)) / 1000
        return rt.LoadModelResponse(sizeInBytes=size)

    def _warm_up(self) -> None:
        """The first load pays `first_load_delay_ms`; the others wait for it to end."""
        with self.state.lock:
            first = not self.state.started_loading
            self.state.started_loading = True
        if first:
            time.sleep(self.config.first_load_delay_ms / 1000)
            self.state.warm.set()
        else:
            self.state.warm.wait()

    def _pattern_failure(self, model_id: str) -> str | None:
        pattern = self.config.fail_pattern
        if pattern and re.search(pattern, model_id):
            return f"stub runtime refuses to load {model_id}"
        return None

    def unloadModel(
        self, request: rt.UnloadModelRequest, context: grpc.ServicerContext
    ) -> rt.UnloadModelResponse:
        with self.state.lock:
            self.state.unloads[request.modelId] += 1
            self.state.loaded.pop(request.modelId, None)
        return rt.UnloadModelResponse()

    def predictModelSize(
        self, request: rt.PredictModelSizeRequest, context: grpc.ServicerContext
    ) -> rt.PredictModelSizeResponse:
        size = int(_overrides(request.modelKey).get("size", self.config.size_bytes))
        return rt.PredictModelSizeResponse(sizeInBytes=size)

    def modelSize(
        self, request: rt.ModelSizeRequest, context: grpc.ServicerContext
    ) -> rt.ModelSizeResponse:
        with self.state.lock:
            size = self.state.loaded.get(request.modelId)
        if size is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.modelId} not loaded")
        return rt.ModelSizeResponse(sizeInBytes=size)


def _bytes_under(path: str) -> int | None:
    """Bytes of the file or directory tree at `path`; None if nothing is there."""
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=True):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


class StubInference(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: StubState, *, record_headers: bool = False) -> None:
        self.state = state
        self.record_headers = record_headers

    def _require_loaded(self, name: str, context: grpc.ServicerContext) -> None:
        _count_inference(self.state, name, context, self.record_headers)

    def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=True)

    def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="mmesh-stub-runtime", version="1")

    def RepositoryIndex(
        self, request: v2.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryIndexResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "use mmesh.ModelRuntime")

    def RepositoryModelLoad(
        self, request: v2.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelLoadResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "use mmesh.ModelRuntime")

    def RepositoryModelUnload(
        self, request: v2.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelUnloadResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "use mmesh.ModelRuntime")

    def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> v2.ModelReadyResponse:
        with self.state.lock:
            return v2.ModelReadyResponse(ready=request.name in self.state.loaded)

    def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ModelMetadataResponse:
        self._require_loaded(request.name, context)
        return v2.ModelMetadataResponse(name=request.name, platform="stub", versions=["1"])

    def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        self._require_loaded(request.model_name, context)
        with self.state.lock:
            delay_s = self.state.infer_delay_s.get(request.model_name, 0.0)
        if delay_s:
            time.sleep(delay_s)
        resp = v2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor in request.inputs:
            resp.outputs.add(
                name=tensor.name,
                datatype=tensor.datatype,
                shape=tensor.shape,
                contents=tensor.contents,
            )
        resp.raw_output_contents.extend(request.raw_input_contents)
        return resp


def _count_inference(
    state: StubState, name: str, context: grpc.ServicerContext, record_headers: bool
) -> None:
    """Count an inference of `name`, or abort NOT_FOUND if it is not loaded."""
    with state.lock:
        loaded = name in state.loaded
        if loaded:
            state.infers[name] += 1
            if record_headers:
                state.headers[name] = sorted(k for k, _ in context.invocation_metadata())
    if not loaded:
        context.abort(grpc.StatusCode.NOT_FOUND, f"model {name} is not loaded")


def _echo_handlers(
    method_infos: dict[str, tuple[int, ...]], state: StubState, *, record_headers: bool = False
) -> list[grpc.GenericRpcHandler[bytes, bytes]]:
    """Each extra method echoes its request, once the model named at its path is loaded."""

    def echo(path: tuple[int, ...]) -> Any:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            name = read_string_field(request, path) or ""
            _count_inference(state, name, context, record_headers)
            return request

        return grpc.unary_unary_rpc_method_handler(answer)

    services: dict[str, dict[str, grpc.RpcMethodHandler[bytes, bytes]]] = {}
    for full, path in method_infos.items():
        service, _, method = full.rpartition("/")
        services.setdefault(service, {})[method] = echo(path)
    return [grpc.method_handlers_generic_handler(n, ms) for n, ms in services.items()]


def _method_info(text: str) -> tuple[str, tuple[int, ...]]:
    method, sep, path = text.partition("=")
    if not sep or "/" not in method:
        raise argparse.ArgumentTypeError(f"expected SERVICE/METHOD=1.2, got {text!r}")
    try:
        return method, tuple(int(n) for n in path.split("."))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad field path in {text!r}") from exc


def _stats_server(state: StubState, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(
    config: StubConfig,
    *,
    port: int,
    stats_port: int | None,
    host: str = "127.0.0.1",
    max_workers: int = 32,
    socket_path: str | None = None,
) -> None:
    state = StubState()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    rt_grpc.add_ModelRuntimeServicer_to_server(StubRuntime(config, state), server)
    inference = StubInference(state, record_headers=config.record_headers)
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
    echo = _echo_handlers(config.method_infos, state, record_headers=config.record_headers)
    server.add_generic_rpc_handlers(echo)
    server.add_insecure_port(f"{host}:{port}")
    if socket_path:
        server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    stats = _stats_server(state, host, stats_port) if stats_port else None
    logger.info("stub runtime on %s:%d", host, port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()
    if stats:
        stats.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("STUB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--stats-port", type=int, default=0)
    parser.add_argument("--capacity-bytes", type=int, default=StubConfig.capacity_bytes)
    parser.add_argument("--default-size-bytes", type=int, default=StubConfig.default_size_bytes)
    parser.add_argument("--size-bytes", type=int, default=StubConfig.size_bytes)
    parser.add_argument("--load-delay-ms", type=int, default=0)
    parser.add_argument("--loading-concurrency", type=int, default=1)
    parser.add_argument("--load-timeout-ms", type=int, default=30_000)
    parser.add_argument(
        "--fail-pattern", default=None, help="regular expression: loads of matching model ids fail"
    )
    parser.add_argument(
        "--require-local-files",
        action="store_true",
        help="a load fails unless modelPath names files on local disk",
    )
    parser.add_argument("--socket", default=None, help="also listen on this unix socket path")
    parser.add_argument(
        "--method-info",
        type=_method_info,
        action="append",
        default=[],
        help="SERVICE/METHOD=1.1: one more data-plane method and its model-id path",
    )
    parser.add_argument(
        "--record-headers",
        action="store_true",
        help="report the header names of each model's last inference under `headers`",
    )
    parser.add_argument(
        "--first-load-delay-ms",
        type=int,
        default=0,
        help="the first load takes this long more; loads meanwhile wait for it",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    config = StubConfig(
        args.capacity_bytes,
        args.default_size_bytes,
        args.size_bytes,
        args.load_delay_ms,
        args.loading_concurrency,
        args.load_timeout_ms,
        args.fail_pattern,
        args.require_local_files,
        dict(args.method_info),
        args.record_headers,
        args.first_load_delay_ms,
    )
    serve(
        config,
        port=args.port,
        stats_port=args.stats_port or None,
        host=args.host,
        socket_path=args.socket,
    )


if __name__ == "__main__":
    main()
