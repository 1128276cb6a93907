"""What etcd did during a window, from outside the router.

- `EtcdCounters`: etcd's own Prometheus counters (`/metrics` on the client port): gRPC
  messages received per method (`grpc_server_msg_received_total`: one per unary call,
  one per message on a stream such as LeaseKeepAlive) and the MVCC range/put/txn/delete
  counters.
- `writes_between`: the keys written between two revisions, read back through a watch
  from the first revision (etcd keeps the history; compaction retention is an hour), so
  each write can be attributed: model record, vmodel record, instance record, other.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass

from procs import http_text

from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection

_MSG_RE = re.compile(
    r'^grpc_server_msg_received_total\{grpc_method="(\w+)",grpc_service="([\w.]+)"[^}]*\}'
    r"\s+([0-9.e+]+)$"
)
_MVCC_RE = re.compile(r"^etcd_debugging_mvcc_(range|put|txn|delete)_total\s+([0-9.e+]+)$")
PROBE_PREFIX = "/mmbench-probe/"


@dataclass(frozen=True)
class EtcdCounters:
    messages: dict[str, int]
    """"Service/Method" -> gRPC messages received."""
    mvcc: dict[str, int]

    @classmethod
    def scrape(cls, client_port: int) -> EtcdCounters:
        messages: dict[str, int] = {}
        mvcc: dict[str, int] = {}
        for line in http_text(f"http://127.0.0.1:{client_port}/metrics").splitlines():
            if m := _MSG_RE.match(line):
                service = m.group(2).removeprefix("etcdserverpb.")
                messages[f"{service}/{m.group(1)}"] = int(float(m.group(3)))
            elif m := _MVCC_RE.match(line):
                mvcc[m.group(1)] = int(float(m.group(2)))
        return cls(messages, mvcc)

    def minus(self, before: EtcdCounters) -> dict[str, dict[str, int]]:
        """Non-zero differences, by group."""
        msgs = {k: v - before.messages.get(k, 0) for k, v in self.messages.items()}
        mvcc = {k: v - before.mvcc.get(k, 0) for k, v in self.mvcc.items()}
        return {
            "grpc_messages": {k: v for k, v in sorted(msgs.items()) if v},
            "mvcc": {k: v for k, v in sorted(mvcc.items()) if v},
        }


def kv_rpcs(diff: dict[str, dict[str, int]]) -> int:
    """Calls of the KV service (Range, Put, Txn, DeleteRange, Compact)."""
    return sum(v for k, v in diff["grpc_messages"].items() if k.startswith("KV/"))


def classify(key: str) -> str:
    for part in ("registry", "vmodels", "instances", "leader"):
        if f"/{part}/" in key or key.endswith(f"/{part}"):
            return part
    return "other"


async def _revision(kv: EtcdKV) -> int:
    _, revision = await kv.range_prefix(PROBE_PREFIX)
    return revision


def current_revision(endpoint: str) -> int:
    async def go() -> int:
        kv = await EtcdKV.connect(EtcdConnection.from_endpoint(endpoint))
        try:
            return await _revision(kv)
        finally:
            await kv.close()

    return asyncio.run(go())


def writes_between(endpoint: str, first: int, last: int, timeout_s: float = 5.0) -> Counter[str]:
    """Writes with first < revision <= last, counted by kind of key ("instances", ...)."""
    found: Counter[str] = Counter()
    if last <= first:
        return found

    async def go() -> None:
        kv = await EtcdKV.connect(EtcdConnection.from_endpoint(endpoint))
        events = kv.watch_prefix("/", start_revision=first + 1)
        try:
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    if event.mod_revision > last:
                        return
                    found[f"{classify(event.key)}:{event.kind.lower()}"] += 1
                    if event.mod_revision >= last:
                        return
        finally:
            await kv.close()

    with contextlib.suppress(TimeoutError):
        asyncio.run(asyncio.wait_for(go(), timeout=timeout_s))
    return found
