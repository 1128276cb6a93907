"""Pooled channels to peer routers (mutual TLS when TLS is on), the headers a forwarded
request carries, and calls that end when their peer goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, NamedTuple, TypeVar

from mmesh.core.numbers import whole_number
from mmesh.core.records import Table
from mmesh.router.certs import PeerCredentials
from mmesh.router.errors import RuntimeUnavailable
from mmesh.router.forwarding import Forwarder, Metadata

T = TypeVar("T")

HOP_HEADER = "mm-hop"
"""`<hops>;<load>;<dest>`, all a forwarded request needs in one header (each header costs
both routers of a hop a few µs): how many routers it passed already; `true` when the
receiver is to load the model if it has no copy (a cache miss placed there), `extra` when
it is to load one although other instances hold copies (scale-up), `false` otherwise; and
the instance the sender meant, which any other receiver answers "model not here". The
destination comes last: it is the one field that may hold the separator."""
EXCLUDE_HEADER = "mm-exclude"
"""Instances that failed this request already; comma-separated."""
BALANCED_HEADER = "mm-balanced"
LOADS = ("true", "extra")

MAX_ITERATIONS = 8

RETIRE_AFTER_S = 300.0
"""How long channels opened with a replaced certificate stay open for calls in flight."""


def _text(headers: Mapping[str, str | bytes], name: str) -> str:
    value = headers.get(name, "")
    return value.decode() if isinstance(value, bytes) else value


class Hop(NamedTuple):
    """The hop header of a request (HOP_HEADER); all empty for a client's own request."""

    hops: int
    load: str
    dest: str

    @property
    def wants_load(self) -> bool:
        return self.load in LOADS

    @property
    def wants_extra(self) -> bool:
        return self.load == "extra"


NOT_FORWARDED = Hop(0, "", "")


def hop_of(headers: Mapping[str, str | bytes]) -> Hop:
    raw = _text(headers, HOP_HEADER)
    if not raw:
        return NOT_FORWARDED
    count, _, rest = raw.partition(";")
    load, _, dest = rest.partition(";")
    return Hop(whole_number(count) or 0, load, dest)


def hop_count(headers: Mapping[str, str | bytes]) -> int:
    return hop_of(headers).hops


def excluded(headers: Mapping[str, str | bytes]) -> set[str]:
    return {x for x in _text(headers, EXCLUDE_HEADER).split(",") if x}


def is_balanced(headers: Mapping[str, str | bytes]) -> bool:
    return _text(headers, BALANCED_HEADER).lower() == "true"


def hop_metadata(
    *,
    hops: int,
    dest: str,
    load: bool,
    exclude: Collection[str],
    extra: bool = False,
    model_id: str | None = None,
) -> list[tuple[str, str | bytes]]:
    """The headers of a request forwarded to instance `dest`; `model_id` only for a method
    whose payload does not name the model (the receiver reads it from there)."""
    load_value = "extra" if extra else "true" if load else "false"
    metadata: list[tuple[str, str | bytes]] = [(HOP_HEADER, f"{hops + 1};{load_value};{dest}")]
    if model_id is not None:
        if model_id.isascii():
            metadata.append(("mm-model-id", model_id))
        else:
            metadata.append(("mm-model-id-bin", model_id.encode()))
    if exclude:
        metadata.append((EXCLUDE_HEADER, ",".join(sorted(exclude))))
    return metadata


class PeerPool:
    """One channel per peer endpoint, kept for the life of the router.

    With TLS, channels are mutual TLS; after the certificate files change, new channels
    are opened with the new material and the old ones are closed `retire_after_s` later,
    once the calls they carry have had time to finish.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int,
        tls: PeerCredentials | None = None,
        retire_after_s: float = RETIRE_AFTER_S,
    ) -> None:
        self._max = max_message_bytes
        self._tls = tls
        self._generation = tls.current().generation if tls is not None else 0
        self._retire_after_s = retire_after_s
        self._peers: dict[str, Forwarder] = {}
        self._retired: set[Forwarder] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, int] = {}

    @property
    def inflight(self) -> Mapping[str, int]:
        """Calls this router has in flight to each instance (placement prefers the fewest)."""
        return self._inflight

    async def call(
        self,
        instance_id: str,
        endpoint: str,
        method: str,
        payload: bytes,
        metadata: Metadata,
        timeout_s: float | None,
    ) -> bytes:
        """One call to the peer `instance_id` at `endpoint`, counted in flight while it runs."""
        self._inflight[instance_id] = self._inflight.get(instance_id, 0) + 1
        try:
            return await self.get(endpoint).call(method, payload, metadata, timeout_s)
        finally:
            self._inflight[instance_id] -= 1

    def get(self, endpoint: str) -> Forwarder:
        if self._tls is None:
            return self._plain(endpoint)
        tls = self._tls.current()
        if tls.generation != self._generation:
            self._retire_all(tls.generation)
        peer = self._peers.get(endpoint)
        if peer is None:
            peer = Forwarder(
                endpoint,
                max_message_bytes=self._max,
                credentials=tls.credentials,
                options=tls.options,
            )
            self._peers[endpoint] = peer
        return peer

    def _plain(self, endpoint: str) -> Forwarder:
        peer = self._peers.get(endpoint)
        if peer is None:
            peer = Forwarder(endpoint, max_message_bytes=self._max)
            self._peers[endpoint] = peer
        return peer

    def _retire_all(self, generation: int) -> None:
        """New certificate: later calls get new channels; the old ones close in a while."""
        self._generation = generation
        old = list(self._peers.values())
        self._peers.clear()
        if not old:
            return
        self._retired.update(old)
        task = asyncio.get_running_loop().create_task(self._close_later(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_later(self, peers: list[Forwarder]) -> None:
        await asyncio.sleep(self._retire_after_s)
        for peer in peers:
            self._retired.discard(peer)
            await peer.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for peer in [*self._peers.values(), *self._retired]:
            await peer.close()
        self._peers.clear()
        self._retired.clear()


class Departures:
    """Calls to peer routers that end as soon as their peer goes away.

    A peer that died or hangs keeps its connections, so a call to it would wait out the
    client's deadline. The registry mirror says when a peer's instance record goes (its lease
    expired) or its start time changes (it restarted under the same id): `peer_changed`, a
    registry listener, cancels every call in flight to that peer, and `watched` turns the
    cancellation into RuntimeUnavailable naming why, so the caller tries another copy. Per
    call this costs two dict updates: no task, no timer, no polling.
    """

    def __init__(self, start_time_ms: Callable[[str], int | None]) -> None:
        self._start_time_ms = start_time_ms
        """A peer's start time from its live record; None when it has none."""
        self._calls: dict[str, dict[asyncio.Task[Any], int]] = {}
        self._why: dict[asyncio.Task[Any], str] = {}

    def peer_changed(self, table: Table, ident: str) -> None:
        if table is not Table.INSTANCES or ident not in self._calls:
            return
        now = self._start_time_ms(ident)
        for task, started in list(self._calls[ident].items()):
            if now != started and task not in self._why:
                self._why[task] = "its instance record is gone" if now is None else "it restarted"
                task.cancel()

    async def watched(self, target: str, started_ms: int, work: Awaitable[T]) -> T:
        """`work`, a call to peer `target` whose record showed start time `started_ms`."""
        task = asyncio.current_task()
        if task is None:
            return await work
        calls = self._calls.setdefault(target, {})
        calls[task] = started_ms
        try:
            return await work
        except asyncio.CancelledError:
            why = self._why.get(task)
            if why is None:
                raise  # the caller gave up (its deadline): so does the call
            task.uncancel()
            raise RuntimeUnavailable(f"peer {target} went away during the call: {why}") from None
        finally:
            self._why.pop(task, None)
            calls.pop(task, None)
            if not calls and self._calls.get(target) is calls:
                del self._calls[target]
