"""One pod of the local cluster: its volumes as folders, its containers as supervised processes,
its probes, its status as the kubelet would report it, and its graceful termination."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from mmesh.local import processes
from mmesh.local.podspec import (
    ContainerPlan,
    PodIdentity,
    PodSources,
    PodSpecError,
    claim_folder,
    match_image,
    mount_table,
    parent_links,
    plan_container,
)
from mmesh.local.rollout import restart_delay

log = logging.getLogger(__name__)

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _stamp() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_data(obj: Mapping[str, Any], *, secret: bool) -> dict[str, str]:
    """A Secret's `data` (base64) and `stringData`, or a ConfigMap's `data`, as text."""
    out = {k: str(v) for k, v in (obj.get("stringData") or {}).items()}
    for key, value in (obj.get("data") or {}).items():
        out[key] = base64.b64decode(value).decode(errors="replace") if secret else str(value)
    return out


RUNNER_FINALIZER = "local.mmesh/pod-runner"
"""Held by every pod the runner starts, as the kubelet holds a pod: `kubectl delete pod` then
only marks it (deletionTimestamp, shown as Terminating) and the object goes once the runner
has stopped its containers and lets go."""


@dataclass
class ContainerRun:
    spec: Mapping[str, Any]
    plan: ContainerPlan | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_exit: int | None = None
    next_start: float = 0.0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    ready: bool = False
    liveness_failures: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    last_readiness: float = 0.0
    last_liveness: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> dict[str, Any]:
        if self.running:
            return {"running": {"startedAt": self.started_at}}
        reason, message = self.waiting or ("ContainerCreating", "")
        return {"waiting": {"reason": reason, "message": message}}


@dataclass
class LocalPod:
    identity: PodIdentity
    owner: tuple[str, str]
    """(namespace, Deployment name)"""
    template: Mapping[str, Any]
    template_hash: str
    folder: Path
    images: Mapping[str, str]
    created: float
    containers: list[ContainerRun] = field(default_factory=list)
    terminating: bool = False
    prepared: bool = False
    created_at: str = field(default_factory=_stamp)

    def __post_init__(self) -> None:
        self.containers = [ContainerRun(c) for c in self.spec.get("containers") or []]

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def spec(self) -> Mapping[str, Any]:
        return dict(self.template.get("spec") or {})

    @property
    def ready(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers)

    # ------------------------------------------------------------ start

    def volume_dirs(self) -> dict[str, str]:
        dirs = {}
        for volume in self.spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                root = str(self.folder.parent.parent)
                dirs[volume["name"]] = claim_folder(root, self.identity.namespace, claim)
            else:
                dirs[volume["name"]] = str(self.folder / "volumes" / volume["name"])
        return dirs

    def write_volumes(self, sources: PodSources) -> None:
        """Create every volume's folder and (re)write Secret and ConfigMap files whose content
        changed, as the kubelet refreshes mounted Secrets."""
        dirs = self.volume_dirs()
        for volume in self.spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in sources.claims:
                # the kubelet leaves such a pod Pending until the claim exists
                message = f'persistentvolumeclaim "{claim}" not found'
                raise PodSpecError("ContainerCreating", message)
            folder = Path(dirs[volume["name"]])
            folder.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                data = _required(sources.secrets, "secret", name, volume["secret"])
                _write_files(folder, data, volume["secret"].get("items"))
            elif "configMap" in volume:
                name = volume["configMap"]["name"]
                data = _required(sources.config_maps, "configmap", name, volume["configMap"])
                _write_files(folder, data, volume["configMap"].get("items"))
            elif not {"emptyDir", "persistentVolumeClaim"} & set(volume):
                kind = next((k for k in volume if k != "name"), "?")
                raise PodSpecError("CreateContainerConfigError", f"volume type {kind} unsupported")

    def prepare(self, sources: PodSources) -> None:
        """Volumes and container plans; a problem leaves the pod waiting with its reason."""
        try:
            self.write_volumes(sources)
            for run in self.containers:
                run.plan = self._plan(run.spec, sources)
        except PodSpecError as exc:
            for run in self.containers:
                run.waiting = (exc.reason, str(exc))
            return
        self.prepared = True

    def _plan(self, container: Mapping[str, Any], sources: PodSources) -> ContainerPlan:
        image = str(container.get("image", ""))
        bin_dir = match_image(image, self.images)
        if bin_dir is None:
            raise PodSpecError(
                "ErrImagePull",
                f"image {image!r} is not available on the local cluster "
                f"(local images: {', '.join(sorted(self.images))})",
            )
        dirs = self.volume_dirs()
        extra = self._link_claim_parents(container, dirs)
        return plan_container(
            self.identity, self.spec, container, sources, dirs, bin_dir, BASE_PATH, extra
        )

    def _link_claim_parents(
        self, container: Mapping[str, Any], dirs: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """Make the parent of each claim mount path (/pvc_mounts) a folder of links, so the
        adapter's PVC_MOUNTS_DIR holds the claims as it does on a node."""
        claims = {v["name"] for v in self.spec.get("volumes") or [] if "persistentVolumeClaim" in v}
        paths = {
            str(m["mountPath"]).rstrip("/")
            for m in container.get("volumeMounts") or []
            if m["name"] in claims
        }
        extra = []
        for parent, entries in parent_links(mount_table(container, dirs), paths).items():
            folder = self.folder / "mounts" / str(container["name"]) / parent.strip("/")
            folder.mkdir(parents=True, exist_ok=True)
            for name, target in entries.items():
                link = folder / name
                if link.is_symlink() and os.readlink(link) == target:
                    continue
                link.unlink(missing_ok=True)
                link.symlink_to(target)
            extra.append((parent, str(folder)))
        return extra

    def supervise(self, now: float) -> None:
        """Start containers that are not running, after their back-off."""
        if not self.prepared or self.terminating:
            return
        for run in self.containers:
            if run.running or run.plan is None:
                continue
            if run.proc is not None:  # it ran and exited: a crash, as the kubelet sees it
                run.last_exit = run.proc.returncode
                run.proc, run.ready = None, False
                run.restarts += 1
                run.next_start = now + restart_delay(run.restarts)
                run.waiting = ("CrashLoopBackOff", f"exited with code {run.last_exit}")
                log.warning("pod %s: container %s exited (%s)", self.name, run.name, run.last_exit)
            if now >= run.next_start:
                self._start(run, now)

    def _start(self, run: ContainerRun, now: float) -> None:
        assert run.plan is not None
        logfile = self.folder / "logs" / f"{run.name}.log"
        try:
            run.proc = processes.start(run.plan.argv, logfile, run.plan.env, cwd=self.folder)
        except OSError as exc:
            run.waiting = ("RunContainerError", str(exc))
            run.next_start = now + restart_delay(run.restarts + 1)
            return
        run.waiting, run.started_at, run.started_mono = None, _stamp(), now
        run.liveness_failures = 0
        pidfile = self.folder / "pids" / run.name
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{run.proc.pid}\n")  # where `kill $(cat ...)` finds a container

    # ------------------------------------------------------------ probes

    async def probe(self, session: aiohttp.ClientSession, now: float) -> None:
        for run in self.containers:
            if not run.running:
                run.ready = False
                continue
            readiness = run.spec.get("readinessProbe")
            if readiness is None:
                run.ready = True
            elif now - run.last_readiness >= min(1.0, _period(readiness)):
                # probed at least every second: a local pod should turn ready without delay
                run.last_readiness = now
                run.ready = await self._check(session, run, readiness)
            await self._liveness(session, run, now)

    async def _liveness(
        self, session: aiohttp.ClientSession, run: ContainerRun, now: float
    ) -> None:
        liveness = run.spec.get("livenessProbe")
        if liveness is None or now - run.started_mono < liveness.get("initialDelaySeconds", 0):
            return
        if now - run.last_liveness < _period(liveness):
            return
        run.last_liveness = now
        if await self._check(session, run, liveness):
            run.liveness_failures = 0
            return
        run.liveness_failures += 1
        if run.liveness_failures >= liveness.get("failureThreshold", 3) and run.proc is not None:
            log.warning("pod %s: container %s failed its liveness probe", self.name, run.name)
            processes.signal_group(run.proc, signal.SIGKILL)

    async def _check(
        self, session: aiohttp.ClientSession, run: ContainerRun, probe: Mapping[str, Any]
    ) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = _port(run.spec, get["port"])
            url = f"{get.get('scheme', 'HTTP').lower()}://{self.identity.ip}:{port}{get['path']}"
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    return 200 <= r.status < 400
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False
        if "tcpSocket" in probe:
            return await _tcp_open(self.identity.ip, _port(run.spec, probe["tcpSocket"]["port"]))
        return True  # exec probes are not run locally

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        started = any(c.running for c in self.containers)
        ready = "True" if self.ready else "False"
        statuses = [
            {
                "name": c.name,
                "image": c.spec.get("image", ""),
                "imageID": "",
                "ready": c.ready,
                "started": c.running,
                "restartCount": c.restarts,
                "state": c.state(),
                **(
                    {"lastState": {"terminated": {"exitCode": c.last_exit}}}
                    if c.last_exit is not None
                    else {}
                ),
            }
            for c in self.containers
        ]
        return {
            "phase": "Running" if started else "Pending",
            "podIP": self.identity.ip,
            "podIPs": [{"ip": self.identity.ip}],
            "hostIP": self.identity.host_ip,
            "startTime": self.created_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": statuses,
        }

    def manifest(self) -> dict[str, Any]:
        """The Pod object the API shows for this pod."""
        labels = {**(self.template.get("metadata") or {}).get("labels", {})}
        labels["pod-template-hash"] = self.template_hash
        meta = {
            "name": self.name,
            "namespace": self.identity.namespace,
            "labels": labels,
            "annotations": (self.template.get("metadata") or {}).get("annotations") or {},
            "finalizers": [RUNNER_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self.owner[1],
                    "uid": "",
                    "controller": True,
                }
            ],
        }
        spec = {**self.spec, "nodeName": "local"}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": self.status(),
        }

    # ------------------------------------------------------------ stop

    async def terminate(self, session: aiohttp.ClientSession, grace: float | None = None) -> None:
        """preStop hooks, then SIGTERM, each container on its own; SIGKILL when the grace period
        ends. With `grace` given (the whole cluster stopping), hooks are skipped."""
        self.terminating = True
        hooks = grace is None
        limit = float(self.spec.get("terminationGracePeriodSeconds", 30))
        limit = limit if grace is None else min(limit, grace)
        await asyncio.gather(*(self._stop(session, run, limit, hooks) for run in self.containers))
        for run in self.containers:
            run.ready = False

    async def _stop(
        self, session: aiohttp.ClientSession, run: ContainerRun, grace: float, hooks: bool
    ) -> None:
        if not run.running or run.proc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = ((run.spec.get("lifecycle") or {}).get("preStop") or {}).get("httpGet")
        if hook is not None and hooks:
            port = _port(run.spec, hook["port"])
            url = f"{hook.get('scheme', 'HTTP').lower()}://{self.identity.ip}:{port}{hook['path']}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                timeout = aiohttp.ClientTimeout(total=grace)
                async with session.get(url, timeout=timeout) as response:
                    await response.read()
        await processes.stop(run.proc, max(0.0, deadline - loop.time()))

    def remove_volumes(self) -> None:
        shutil.rmtree(self.folder / "volumes", ignore_errors=True)


def _required(
    source: Mapping[str, Mapping[str, str]], kind: str, name: str, volume: Mapping[str, Any]
) -> Mapping[str, str]:
    if name in source:
        return source[name]
    if volume.get("optional"):
        return {}
    raise PodSpecError("ContainerCreating", f"MountVolume.SetUp failed: {kind} {name!r} not found")


def _write_files(folder: Path, data: Mapping[str, str], items: Any) -> None:
    wanted = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    for key, rel in wanted.items():
        if key not in data:
            continue
        path = folder / rel
        if path.exists() and path.read_text(errors="replace") == data[key]:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(data[key])
        os.replace(tmp, path)


def _port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise PodSpecError("CreateContainerConfigError", f"no container port named {port!r}")


def _period(probe: Mapping[str, Any]) -> float:
    return float(probe.get("periodSeconds", 10))


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
