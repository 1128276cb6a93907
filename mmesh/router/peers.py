"""Pooled channels to peer routers, and the headers a forwarded request carries."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from mmesh.router.forwarding import Forwarder

HOP_HEADER = "mm-hop"
"""How many routers the request has passed through already."""
EXCLUDE_HEADER = "mm-exclude"
"""Instances that failed this request already; comma-separated."""
DEST_HEADER = "mm-dest"
"""The instance the sender meant; any other receiver answers "model not here"."""
LOAD_HEADER = "mm-load"
"""`true`: the receiver loads the model if it has no copy (a cache miss placed there);
`extra`: the receiver loads it even though other instances hold copies (scale-up)."""
BALANCED_HEADER = "mm-balanced"

MAX_ITERATIONS = 8


def _text(headers: Mapping[str, str | bytes], name: str) -> str:
    value = headers.get(name, "")
    return value.decode() if isinstance(value, bytes) else value


def hop_count(headers: Mapping[str, str | bytes]) -> int:
    raw = _text(headers, HOP_HEADER)
    return int(raw) if raw.isdigit() else 0


def excluded(headers: Mapping[str, str | bytes]) -> set[str]:
    return {x for x in _text(headers, EXCLUDE_HEADER).split(",") if x}


def wants_load(headers: Mapping[str, str | bytes]) -> bool:
    return _text(headers, LOAD_HEADER) in ("true", "extra")


def wants_extra(headers: Mapping[str, str | bytes]) -> bool:
    return _text(headers, LOAD_HEADER) == "extra"


def destination(headers: Mapping[str, str | bytes]) -> str:
    return _text(headers, DEST_HEADER)


def is_balanced(headers: Mapping[str, str | bytes]) -> bool:
    return _text(headers, BALANCED_HEADER).lower() == "true"


def hop_metadata(
    *,
    model_id: str,
    hops: int,
    dest: str,
    load: bool,
    exclude: Collection[str],
    extra: bool = False,
) -> list[tuple[str, str | bytes]]:
    load_value = "extra" if extra else "true" if load else "false"
    metadata: list[tuple[str, str | bytes]] = [
        (HOP_HEADER, str(hops + 1)),
        (DEST_HEADER, dest),
        (LOAD_HEADER, load_value),
    ]
    if model_id.isascii():
        metadata.append(("mm-model-id", model_id))
    else:
        metadata.append(("mm-model-id-bin", model_id.encode()))
    if exclude:
        metadata.append((EXCLUDE_HEADER, ",".join(sorted(exclude))))
    return metadata


class PeerPool:
    """One channel per peer endpoint, kept for the life of the router."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._peers: dict[str, Forwarder] = {}
        self.inflight: dict[str, int] = {}

    def get(self, endpoint: str) -> Forwarder:
        peer = self._peers.get(endpoint)
        if peer is None:
            peer = Forwarder(endpoint, max_message_bytes=self._max)
            self._peers[endpoint] = peer
        return peer

    async def close(self) -> None:
        for peer in self._peers.values():
            await peer.close()
