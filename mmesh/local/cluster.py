"""The local cluster: etcd, the emulated Kubernetes API, an S3 server with the sample models, the
real operator, the pod runner, and the port-forward of Service `modelmesh-serving`.

Started in that order, stopped in reverse. Everything listens on 127.0.0.0/8 only: the API,
etcd and S3 on 127.0.0.1, each runtime pod on its own `<pod_block>.N` address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmesh.local import processes, samples
from mmesh.local.control import ControlServer
from mmesh.local.kube import LocalKube
from mmesh.local.kubeconfig import write_kubeconfig
from mmesh.local.podrunner import PodRunner
from mmesh.local.portforward import ServiceForward
from mmesh.local.tlsfiles import TlsFiles, write_tls_files

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "modelmesh-serving"
STORAGE_KEY = "localMinIO"
S3_ACCESS_KEY = "quickstart"

Say = Callable[[str], None]


@dataclass(frozen=True)
class ClusterConfig:
    workdir: Path
    namespace: str = "modelmesh-serving"
    host: str = "127.0.0.1"
    """Where the port-forward listens."""
    grpc_port: int = 8033
    rest_port: int = 8008
    api_port: int = 0
    pod_block: str = "127.0.10"
    """Pods get `<pod_block>.2`, `.3`, …"""
    runtimes_dir: Path = ROOT / "config" / "runtimes"
    mlserver_venv: Path = ROOT / ".venv-mlserver"
    operator_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the operator process."""
    tls: bool = False
    """Serve 8033 / 8008 / pod-to-pod over TLS with a throwaway CA (files in `<workdir>/tls`)."""
    client_auth: str = ""
    """With `tls`: `require` or `optional` client certificates (`tls.clientAuth`)."""
    s3_secret_key: str = field(default_factory=lambda: f"local-{secrets.token_hex(12)}")
    """The storage Secret's secret key (the S3 server accepts any); random, so a scan of logs,
    events and status for it means something."""

    def images(self) -> dict[str, str]:
        """Image repository name -> the local folder of executables that stands for it."""
        ours = str(Path(sys.executable).parent)
        return {
            "mmesh-router": ours,
            "mmesh-operator": ours,
            "mmesh-stub-runtime": ours,  # the stub runtime as a custom ServingRuntime's server
            "mlserver": str(self.mlserver_venv / "bin"),
        }


@dataclass
class Endpoints:
    """What a user (or a test) needs to reach the running cluster; written as JSON."""

    kubeconfig: str
    api_url: str
    namespace: str
    grpc: str
    rest: str
    etcd: str
    s3: str
    workdir: str
    tls_dir: str = ""
    """With TLS: ca.crt, client.crt and client.key for grpcurl / curl."""
    control: str = ""
    """`host:port` of the control endpoint (faults on demand, see `mmesh.local.control`)."""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


class LocalCluster:
    def __init__(self, config: ClusterConfig, say: Say) -> None:
        self.config = config
        self._say = say
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._forwards: list[ServiceForward] = []
        self._service: dict[str, Any] = {}
        self.runner: PodRunner | None = None
        self.kube: LocalKube | None = None
        self._control = ControlServer(self)
        self._etcd_argv: list[str] = []
        self._etcd_client = ""
        self._etcd_held = False
        """Killed through the control endpoint: stays down until started through it."""

    # ------------------------------------------------------------ start

    async def run(self, stop: asyncio.Event, ready: Callable[[Endpoints], None]) -> None:
        """Start everything, call `ready`, serve until `stop` is set, then stop everything."""
        tasks: list[asyncio.Task[None]] = []
        try:
            endpoints = await self._start(stop, tasks)
            ready(endpoints)
            await stop.wait()
        finally:
            self._say("stopping the local cluster")
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            for forward in self._forwards:
                await forward.close()
            await self._control.close()
            for name in reversed(list(self._procs)):
                await processes.stop(self._procs[name], 10.0)
            if self.kube is not None:
                self.kube.close()

    async def _start(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> Endpoints:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        etcd = await self._start_etcd()
        tasks.append(asyncio.create_task(self._supervise_etcd(stop)))
        api_url = await self._start_api()
        kubeconfig = write_kubeconfig(cfg.workdir / "kubeconfig", api_url, cfg.namespace)
        self.kube = LocalKube(kubeconfig)
        s3 = await self._start_s3()
        self._say("creating the namespace, the etcd and storage Secrets and the ServingRuntimes")
        tls = write_tls_files(cfg.workdir / "tls", cfg.namespace, SERVICE) if cfg.tls else None
        await asyncio.to_thread(self._bootstrap, etcd, s3, tls)
        tasks.append(asyncio.create_task(self._supervise_operator(stop, kubeconfig, etcd)))
        self.runner = PodRunner(self.kube, cfg.workdir / "pods", cfg.images(), cfg.pod_block)
        tasks.append(asyncio.create_task(self.runner.run(stop)))
        tasks.append(asyncio.create_task(self._watch_service(stop)))
        grpc = await self._forward(cfg.grpc_port, 8033)
        rest = await self._forward(cfg.rest_port, 8008)
        control = await self._control.start("127.0.0.1", processes.free_port())
        return Endpoints(
            kubeconfig=str(kubeconfig),
            api_url=api_url,
            namespace=cfg.namespace,
            grpc=f"{cfg.host}:{grpc}",
            rest=f"{cfg.host}:{rest}",
            etcd=etcd,
            s3=s3,
            workdir=str(cfg.workdir),
            tls_dir=str(tls.folder) if tls else "",
            control=control,
        )

    async def _start_etcd(self) -> str:
        port, peer = processes.free_port(), processes.free_port()
        data = self.config.workdir / "etcd"
        client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        argv = [
            "etcd", "--name", "local", "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"local={peer_url}", "--log-level", "error",
        ]  # fmt: skip
        self._etcd_argv, self._etcd_client = argv, client
        self._say(f"starting etcd on 127.0.0.1:{port}")
        await self._launch("etcd", argv, lambda: processes.http_ok(f"{client}/health"))
        return f"127.0.0.1:{port}"

    async def _supervise_etcd(self, stop: asyncio.Event) -> None:
        """etcd is started again (same data, same port) if it exits, unless it was killed
        through the control endpoint."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            proc = self._procs.get("etcd")
            if stop.is_set() or self._etcd_held or proc is None or proc.poll() is None:
                continue
            log.warning("etcd exited with %s; restarting it", proc.returncode)
            with contextlib.suppress(RuntimeError):
                await self._relaunch_etcd()

    async def _relaunch_etcd(self) -> int:
        client = self._etcd_client
        await self._launch("etcd", self._etcd_argv, lambda: processes.http_ok(f"{client}/health"))
        return self._procs["etcd"].pid

    # ------------------------------------------------------------ control (faults on demand)

    def process_ids(self) -> dict[str, Any]:
        """pid of each running cluster process and of each pod's running containers."""
        found: dict[str, Any] = {
            name: proc.pid for name, proc in self._procs.items() if proc.poll() is None
        }
        pods: dict[str, dict[str, int]] = {}
        for pod in (self.runner.pods if self.runner else {}).values():
            pods[pod.name] = {
                run.name: run.proc.pid for run in pod.containers if run.running and run.proc
            }
        found["pods"] = pods
        return found

    async def kill_etcd(self) -> int:
        """SIGKILL etcd and keep it down until `start_etcd`; its pid."""
        self._etcd_held = True
        proc = self._procs["etcd"]
        processes.signal_group(proc, signal.SIGKILL)
        await processes.wait_exit(proc, 10.0)
        return proc.pid

    async def start_etcd(self) -> int:
        """Start etcd again on its data directory and port (after `kill_etcd`); its pid."""
        proc = self._procs["etcd"]
        if proc.poll() is None:
            self._etcd_held = False
            return proc.pid
        try:
            return await self._relaunch_etcd()
        finally:
            self._etcd_held = False

    def kill_operator(self) -> int:
        """SIGKILL the operator (its supervisor starts it again); its pid."""
        proc = self._procs.get("operator")
        if proc is None or proc.poll() is not None:
            raise LookupError("the operator is not running")
        processes.signal_group(proc, signal.SIGKILL)
        return proc.pid

    def kill_container(self, pod: str, container: str) -> int:
        """SIGKILL a pod's container (every process of it); the pid of its main process."""
        if self.runner is None or pod not in self.runner.pods:
            raise KeyError(f"no pod {pod}")
        return self.runner.kill_container(pod, container)

    async def _start_api(self) -> str:
        ready = self.config.workdir / "kube-api.url"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "mmesh.local.kubeapi", "--ready", str(ready)]
        argv += ["--port", str(self.config.api_port), "--logs", str(self.config.workdir / "pods")]
        self._say("starting the Kubernetes API (emulated)")
        await self._launch("kube-api", argv, ready.exists)
        return ready.read_text().strip()

    async def _start_s3(self) -> str:
        port = processes.free_port()
        endpoint = f"http://127.0.0.1:{port}"
        argv = [
            str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        self._say(f"starting the S3 server on 127.0.0.1:{port} and uploading the sample models")
        await self._launch("s3", argv, lambda: processes.http_ok(endpoint))
        python = self.config.mlserver_venv / "bin" / "python"
        keys = await asyncio.to_thread(
            samples.upload_samples, endpoint, self.config.workdir / "samples", python
        )
        self._say(f"sample models in s3://{samples.TUTORIAL_BUCKET}: {', '.join(keys)}")
        return endpoint

    async def _launch(self, name: str, argv: list[str], up: Callable[[], bool]) -> None:
        logfile = self.config.workdir / "logs" / f"{name}.log"
        proc = processes.start(argv, logfile, cwd=self.config.workdir)
        self._procs[name] = proc
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {processes.log_tail(logfile)}")
            with contextlib.suppress(Exception):
                if up():
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not start in 60 s: {processes.log_tail(logfile)}")

    # ------------------------------------------------------------ objects

    def _bootstrap(self, etcd: str, s3: str, tls: TlsFiles | None) -> None:
        assert self.kube is not None
        objects = bootstrap_objects(self.config, etcd, s3)
        if tls is not None:
            objects += tls_objects(self.config, tls)
        for manifest in objects:
            self.kube.apply(manifest)

    # ------------------------------------------------------------ operator

    async def _supervise_operator(self, stop: asyncio.Event, kubeconfig: Path, etcd: str) -> None:
        """The operator runs as a process and is restarted if it exits (as its Deployment
        would be)."""
        restarts = 0
        while not stop.is_set():
            proc = self._start_operator(kubeconfig, etcd, restarts)
            while proc.poll() is None and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            if stop.is_set():
                await processes.stop(proc, 10.0)
                return
            restarts += 1
            log.warning("operator exited with %s; restarting", proc.returncode)
            await asyncio.sleep(min(10.0, float(restarts)))

    def _start_operator(
        self, kubeconfig: Path, etcd: str, restarts: int
    ) -> subprocess.Popen[bytes]:
        cfg = self.config
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "KUBECONFIG": str(kubeconfig),
            "NAMESPACE": cfg.namespace,
            "NAMESPACE_SCOPE": "true",
            "ETCD_CONNECTION": json.dumps({"endpoints": f"http://{etcd}", "root_prefix": SERVICE}),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(processes.free_port()),
            # one pod whose container restarts: a restarted operator leads again at once
            "POD_NAME": "modelmesh-controller-local",
            **cfg.operator_env,
        }
        if restarts == 0:
            self._say("starting the operator")
        argv = [sys.executable, "-m", "mmesh.operator"]
        proc = processes.start(argv, cfg.workdir / "logs" / "operator.log", env, cfg.workdir)
        self._procs["operator"] = proc
        return proc

    # ------------------------------------------------------------ service

    async def _watch_service(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                assert self.kube is not None
                found = await asyncio.to_thread(self.kube.service, self.config.namespace, SERVICE)
                self._service = found or {}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def service_endpoints(self, port: int) -> list[tuple[str, int]]:
        """(pod address, container port) of each ready pod behind the Service's `port`."""
        spec = self._service.get("spec") or {}
        entry = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
        if entry is None or self.runner is None:
            return []
        target = entry.get("targetPort", port)
        found = []
        for ip in self.runner.ready_addresses(self.config.namespace, spec.get("selector") or {}):
            pod = next(p for p in self.runner.pods.values() if p.identity.ip == ip)
            resolved = _container_port(pod.spec, target)
            if resolved is not None:
                found.append((ip, resolved))
        return found

    async def _forward(self, local_port: int, service_port: int) -> int:
        forward = ServiceForward(
            lambda: self.service_endpoints(service_port), f"service/{SERVICE}:{service_port}"
        )
        bound = await forward.start(self.config.host, local_port)
        self._forwards.append(forward)
        self._say(f"forwarding {self.config.host}:{bound} -> service/{SERVICE}:{service_port}")
        return bound


def bootstrap_objects(config: ClusterConfig, etcd: str, s3: str) -> list[dict[str, Any]]:
    """What `helm install --set quickstart=true,namespaceScope=true` would leave in the
    namespace: the etcd and storage Secrets and the default ServingRuntimes."""
    ns = config.namespace
    etcd_doc = {"endpoints": f"http://{etcd}", "root_prefix": SERVICE}
    storage = {
        "type": "s3",
        "access_key_id": S3_ACCESS_KEY,
        "secret_access_key": config.s3_secret_key,
        "endpoint_url": s3,
        "region": "us-east-1",
        "default_bucket": samples.TUTORIAL_BUCKET,
    }
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        _secret(ns, "model-serving-etcd", {"etcd_connection": json.dumps(etcd_doc)}),
        _secret(ns, "storage-config", {STORAGE_KEY: json.dumps(storage)}),
    ]
    for path in sorted(config.runtimes_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("ClusterServingRuntime", "ServingRuntime"):
                doc["kind"] = "ServingRuntime"
                doc["metadata"]["namespace"] = ns
                objects.append(doc)
    return objects


TLS_SECRET = "mmesh-tls"


def tls_objects(config: ClusterConfig, tls: TlsFiles) -> list[dict[str, Any]]:
    """The serving certificate as a TLS Secret and `model-serving-config` naming it."""
    ns = config.namespace
    data = {
        "tls.crt": tls.server_cert.read_text(),
        "tls.key": tls.server_key.read_text(),
        "ca.crt": tls.ca.read_text(),
    }
    secret = _secret(ns, TLS_SECRET, data)
    secret["type"] = "kubernetes.io/tls"
    settings: dict[str, Any] = {"secretName": TLS_SECRET}
    if config.client_auth:
        settings["clientAuth"] = config.client_auth
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-serving-config", "namespace": ns},
        "data": {"config.yaml": yaml.safe_dump({"tls": settings})},
    }
    return [secret, config_map]


def _secret(namespace: str, name: str, data: Mapping[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    meta = {"name": name, "namespace": namespace}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": meta,
        "data": encoded,
    }


def _container_port(spec: Mapping[str, Any], target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None
