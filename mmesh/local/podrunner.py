"""The local cluster's kubelet, deployment controller and volume provisioner.

Every second: read the Deployments; start and stop pods as `rollout.plan_rollout` says;
write Pod objects and Deployment status back to the API so `kubectl get pods`, the operator
and the port-forward see what runs. Apart from that loop, as a kubelet works apart from the
API server: every quarter second, start or restart each pod's containers as processes and
probe them (a slow API must not delay a crashed container's restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from mmesh.local import processes
from mmesh.local.kube import LocalKube
from mmesh.local.pods import LocalPod, decode_data
from mmesh.local.podspec import PodIdentity, PodSources, claim_folder, template_hash
from mmesh.local.rollout import PodView, deployment_status, plan_rollout

log = logging.getLogger(__name__)

TICK_S = 1.0
SUPERVISE_S = 0.25
SOURCES_REFRESH_S = 5.0
SHUTDOWN_GRACE_S = 10.0
DELETE_GRACE_S = 2.0
"""A pod this young may not be listed yet (its create is in flight): not taken as deleted."""


class AddressPool:
    """Pod addresses `<prefix>.2` … `<prefix>.254`, handed out in turn so a stopped pod's
    address is not reused at once (peers may still hold it)."""

    def __init__(self, prefix: str) -> None:
        self._cycle = itertools.cycle(range(2, 255))
        self._prefix = prefix
        self._taken: set[str] = set()

    def take(self) -> str:
        for _ in range(253):
            address = f"{self._prefix}.{next(self._cycle)}"
            if address not in self._taken:
                self._taken.add(address)
                return address
        raise RuntimeError(f"no free pod address in {self._prefix}.0/24")

    def release(self, address: str) -> None:
        self._taken.discard(address)


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def _selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class PodRunner:
    def __init__(
        self, kube: LocalKube, folder: Path, images: Mapping[str, str], address_prefix: str
    ) -> None:
        self._kube = kube
        self._folder = folder
        self._images = dict(images)
        self._addresses = AddressPool(address_prefix)
        self.pods: dict[str, LocalPod] = {}
        self._pushed: dict[str, Any] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._sources_at = 0.0
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ queries

    def ready_addresses(self, namespace: str, selector: Mapping[str, str]) -> list[str]:
        """Addresses of ready pods a Service with this selector would send traffic to."""
        return [
            pod.identity.ip
            for pod in self.pods.values()
            if pod.identity.namespace == namespace
            and pod.ready
            and not pod.terminating
            and _selected(pod.identity.labels, selector)
        ]

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            self._session = session
            kubelet = asyncio.create_task(self._supervise(session, stop))
            try:
                while not stop.is_set():
                    try:
                        await self.tick(session)
                    except Exception as exc:  # the API restarting, a pod body it refused, ...
                        log.warning("pod runner: %s: %s; retrying", type(exc).__name__, exc)
                        log.debug("pod runner tick", exc_info=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), TICK_S)
            finally:
                kubelet.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kubelet
                await self.shutdown(session)
                self._session = None

    async def _supervise(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Start, restart and probe every pod's containers, without any API call."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for pod in list(self.pods.values()):
                try:
                    now = loop.time()
                    pod.supervise(now)
                    await pod.probe(session, now)
                except Exception as exc:  # one pod's trouble must not stop the others
                    log.warning("pod %s: %s", pod.name, exc, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_S)

    async def tick(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        deployments = await asyncio.to_thread(self._kube.deployments)
        await self._stop_deleted(session, now)
        refresh = now - self._sources_at >= SOURCES_REFRESH_S
        if refresh:
            self._sources_at = now
            await asyncio.to_thread(self._bind_claims)
        wanted = set()
        for deployment in deployments:
            meta = deployment["metadata"]
            wanted.add((meta.get("namespace", ""), meta["name"]))
            await self._reconcile(deployment, session, now)
        for pod in list(self.pods.values()):
            if pod.owner not in wanted:
                self._begin_stop(pod, session, grace=None)
            elif refresh or not pod.prepared:
                await self._prepare(pod)
            await self._push_pod(pod)
        for deployment in deployments:
            await self._push_deployment(deployment)

    async def _stop_deleted(self, session: aiohttp.ClientSession, now: float) -> None:
        """`kubectl delete pod`: a pod whose object is gone from the API is stopped gracefully
        (preStop hooks, grace period), and the rollout then starts a replacement."""
        listed = await asyncio.to_thread(self._kube.pod_names)
        for pod in list(self.pods.values()):
            key = (pod.identity.namespace, pod.name)
            if key not in listed and not pod.terminating and now - pod.created > DELETE_GRACE_S:
                log.info("pod %s: deleted through the API", pod.name)
                self._begin_stop(pod, session, grace=None)

    async def _reconcile(
        self, deployment: Mapping[str, Any], session: aiohttp.ClientSession, now: float
    ) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        owner = (meta.get("namespace", ""), meta["name"])
        template = spec.get("template") or {}
        current = template_hash(template)
        mine = [p for p in self.pods.values() if p.owner == owner and not p.terminating]
        views = [PodView(p.name, p.template_hash, p.ready, p.created) for p in mine]
        step = plan_rollout(int(spec.get("replicas", 1)), current, views)
        for name in step.stop:
            self._begin_stop(self.pods[name], session, grace=None)
        for _ in range(step.start):
            await self._create_pod(owner, template, current, now)

    async def _create_pod(
        self, owner: tuple[str, str], template: Mapping[str, Any], hash_: str, now: float
    ) -> None:
        namespace, deployment = owner
        name = f"{deployment}-{hash_}-{_suffix()}"
        labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": hash_}
        identity = PodIdentity(name, namespace, self._addresses.take(), labels=labels)
        pod = LocalPod(identity, owner, template, hash_, self._folder / name, self._images, now)
        try:
            await self._prepare(pod)
            await asyncio.to_thread(self._kube.create_pod, pod.manifest())
        except Exception:
            self._addresses.release(identity.ip)
            raise
        self.pods[name] = pod
        log.info("pod %s: created on %s", name, identity.ip)

    async def _prepare(self, pod: LocalPod) -> None:
        sources = await asyncio.to_thread(self._sources, pod)
        pod.prepare(sources) if not pod.prepared else pod.write_volumes(sources)

    def _bind_claims(self) -> None:
        """The local volume provisioner: each new PersistentVolumeClaim gets its folder
        (`<workdir>/pvcs/<namespace>/<claim>`, shared by every pod) and turns Bound."""
        for claim in self._kube.unbound_claims():
            meta = claim["metadata"]
            folder = claim_folder(str(self._folder.parent), meta["namespace"], meta["name"])
            Path(folder).mkdir(parents=True, exist_ok=True)
            requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
            capacity = str(requests.get("storage") or "1Gi")
            self._kube.bind_claim(meta["namespace"], meta["name"], folder, capacity)
            log.info("PVC %s/%s: bound to %s", meta["namespace"], meta["name"], folder)

    def _sources(self, pod: LocalPod) -> PodSources:
        """The Secrets and ConfigMaps the pod's volumes and env name, read now."""
        namespace = pod.identity.namespace
        secret_names, map_names = _referenced(pod.spec)
        found_secrets = {n: self._kube.secret(namespace, n) for n in secret_names}
        found_maps = {n: self._kube.config_map(namespace, n) for n in map_names}
        volumes = pod.spec.get("volumes") or []
        claims = self._kube.claims(namespace) if _has_claims(volumes) else set()
        return PodSources(
            secrets={n: decode_data(o, secret=True) for n, o in found_secrets.items() if o},
            config_maps={n: decode_data(o, secret=False) for n, o in found_maps.items() if o},
            claims=frozenset(claims),
        )

    # ------------------------------------------------------------ status

    async def _push_pod(self, pod: LocalPod) -> None:
        if pod.terminating:
            return
        status = pod.status()
        if self._pushed.get(pod.name) != status:
            await asyncio.to_thread(
                self._kube.patch_pod_status, pod.identity.namespace, pod.name, status
            )
            self._pushed[pod.name] = status

    async def _push_deployment(self, deployment: Mapping[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        owner = (meta.get("namespace", ""), meta["name"])
        mine = [p for p in self.pods.values() if p.owner == owner and not p.terminating]
        views = [PodView(p.name, p.template_hash, p.ready, p.created) for p in mine]
        current = template_hash(spec.get("template") or {})
        status = deployment_status(
            int(spec.get("replicas", 1)), current, views, int(meta.get("generation", 1))
        )
        old = {k: v for k, v in (deployment.get("status") or {}).items() if k in status}
        if old != status:
            await asyncio.to_thread(self._kube.patch_deployment_status, *owner, status)

    # ------------------------------------------------------------ stop

    def _begin_stop(
        self, pod: LocalPod, session: aiohttp.ClientSession, grace: float | None
    ) -> None:
        if pod.name in self._stopping:
            return
        pod.terminating = True
        log.info("pod %s: terminating", pod.name)
        self._stopping[pod.name] = asyncio.create_task(self._stop(pod, session, grace))

    async def _stop(
        self, pod: LocalPod, session: aiohttp.ClientSession, grace: float | None
    ) -> None:
        namespace = pod.identity.namespace
        with contextlib.suppress(Exception):  # the API may already be gone at shutdown
            patch = {"metadata": {"deletionTimestamp": pod.created_at}}
            await asyncio.to_thread(self._kube.patch_pod, namespace, pod.name, patch)
        try:
            await pod.terminate(session, grace)
        finally:
            pod.remove_volumes()
            self.pods.pop(pod.name, None)
            self._pushed.pop(pod.name, None)
            self._addresses.release(pod.identity.ip)
            self._stopping.pop(pod.name, None)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._kube.delete_pod, namespace, pod.name)
            log.info("pod %s: stopped", pod.name)

    async def shutdown(self, session: aiohttp.ClientSession) -> None:
        """Stop every pod at once, without preStop hooks and with a short grace: the whole
        cluster is going away, so there is nowhere to move models to."""
        for pod in list(self.pods.values()):
            self._begin_stop(pod, session, grace=SHUTDOWN_GRACE_S)
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    def kill_container(self, pod_name: str, container: str) -> int:
        """SIGKILL every process of one container (its process group), as an OOM kill ends a
        container; the pid of its main process."""
        pod = self.pods[pod_name]
        for run in pod.containers:
            if run.name == container and run.running and run.proc is not None:
                processes.signal_group(run.proc, signal.SIGKILL)
                return run.proc.pid
        raise KeyError(f"pod {pod_name} has no running container {container}")


def _has_claims(volumes: Any) -> bool:
    return any("persistentVolumeClaim" in v for v in volumes)


def _referenced(spec: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps a pod spec's volumes and env refer to."""
    secret_names: set[str] = set()
    map_names: set[str] = set()
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            secret_names.add(volume["secret"]["secretName"])
        if "configMap" in volume:
            map_names.add(volume["configMap"]["name"])
    for container in spec.get("containers") or []:
        refs = [*(container.get("envFrom") or [])]
        refs += [(v.get("valueFrom") or {}) for v in container.get("env") or []]
        for ref in refs:
            for key, names, field in _REF_KINDS:
                if key in ref:
                    names_for = secret_names if names == "secret" else map_names
                    names_for.add(ref[key][field])
    return secret_names, map_names


_REF_KINDS = (
    ("secretRef", "secret", "name"),
    ("secretKeyRef", "secret", "name"),
    ("configMapRef", "configmap", "name"),
    ("configMapKeyRef", "configmap", "name"),
)
