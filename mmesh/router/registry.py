"""The router's mirror of the mesh registry in etcd: models, vmodels and instances.

One consistent range read at start-up, then a watch from the next revision keeps the
mirror current. Requests only read the mirror (dict lookups, no etcd call). Writes are
compare-and-swap on the key's mod revision; a lost race re-reads the key and retries.
If etcd goes away the mirror keeps serving what it has and resynchronises when etcd is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from mmesh.core.errors import InvalidRecord, RevisionCompacted, StoreUnavailable
from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.kv import KeyValue, KVStore, WatchEvent
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord, Table, VModelRecord
from mmesh.router.pacing import Pacer

logger = logging.getLogger(__name__)

CAS_ATTEMPTS = 20
RESYNC_DELAY_S = 1.0


class Record(Protocol):
    def to_json(self) -> bytes: ...


R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class Versioned(Generic[R]):
    record: R
    mod_revision: int
    confirmed: bool = True
    """False for this router's own write before its watch event arrived: the revision
    is not known yet, so a compare-and-swap must re-read the key first."""


class Unchanged:
    """Returned by an update function that decides no write is needed."""


UNCHANGED = Unchanged()

Listener = Callable[[Table, str], None]


class MirrorTable(Generic[R]):
    """One table of the mirror: id -> newest record seen, with its mod revision."""

    def __init__(
        self, table: Table, decode: Callable[[bytes, str], R], key_of: Callable[[str], str]
    ) -> None:
        self.table = table
        self.items: dict[str, Versioned[R]] = {}
        self.version = 0
        """Counts the changes to `items`: a copy made at one version holds until the next."""
        self._decode = decode
        self.key_of = key_of

    def get(self, ident: str) -> R | None:
        found = self.items.get(ident)
        return found.record if found else None

    def apply(self, ident: str, value: bytes, revision: int, *, force: bool = False) -> bool:
        current = self.items.get(ident)
        if not force and current is not None and current.mod_revision >= revision:
            return False
        try:
            record = self._decode(value, ident)
        except InvalidRecord as exc:
            logger.error("ignoring bad registry value: %s", exc)
            return False
        self.put(ident, Versioned(record, revision))
        return True

    def put(self, ident: str, held: Versioned[R]) -> None:
        self.items[ident] = held
        self.version += 1

    def remove(self, ident: str, revision: int | None = None) -> bool:
        current = self.items.get(ident)
        if current is None or (revision is not None and current.mod_revision > revision):
            return False
        del self.items[ident]
        self.version += 1
        return True


class Registry:
    def __init__(self, kv: KVStore, layout: KeyLayout) -> None:
        self.kv = kv
        self.layout = layout
        self.models: MirrorTable[ModelRecord] = MirrorTable(
            Table.REGISTRY,
            lambda v, k: ModelRecord.from_json(v, key=k),
            lambda i: layout.model_key(ModelId(i)),
        )
        self.vmodels: MirrorTable[VModelRecord] = MirrorTable(
            Table.VMODELS,
            lambda v, k: VModelRecord.from_json(v, key=k),
            lambda i: layout.vmodel_key(VModelId(i)),
        )
        self.instances: MirrorTable[InstanceRecord] = MirrorTable(
            Table.INSTANCES,
            lambda v, k: InstanceRecord.from_json(v, key=k),
            lambda i: layout.instance_key(InstanceId(i)),
        )
        self._by_table: dict[Table, MirrorTable[Any]] = {
            Table.REGISTRY: self.models,
            Table.VMODELS: self.vmodels,
            Table.INSTANCES: self.instances,
        }
        self.synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self._revision = 0
        self._task: asyncio.Task[None] | None = None
        self._touched: set[tuple[Table, str]] | None = None
        """While a sync runs: the records this router wrote or re-read meanwhile."""

    def on_change(self, listener: Listener) -> None:
        """Called synchronously after each applied change with (table, id)."""
        self._listeners.append(listener)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self._sync(pacer=None)  # not serving yet: nothing to share the loop with
        self._task = asyncio.create_task(self._follow(), name="registry-watch")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sync(self, pacer: Pacer | None) -> None:
        """Make the mirror the store's snapshot. With a `pacer` (a resync while serving:
        20K records are about 250 ms of decoding) the pass rests between slices, and this
        router's own writes in the meantime are kept out of it: their keys are read again
        at the end instead (the snapshot may be older than the write, or newer)."""
        touched: set[tuple[Table, str]] = set()
        self._touched = touched
        try:
            items, revision = await self.kv.range_prefix(self.layout.base)
            if pacer is not None:
                pacer.resume()
            seen = await self._apply_snapshot(items, touched, pacer)
            await self._drop_unseen(seen, touched, pacer)
            self._touched = None
            for table, ident in list(touched):
                await self._refresh(self._by_table[table], ident)
        finally:
            self._touched = None
        self._revision = revision
        self.synced.set()
        logger.info(
            "registry synced at revision %d: %d models, %d vmodels, %d instances",
            revision,
            len(self.models.items),
            len(self.vmodels.items),
            len(self.instances.items),
        )

    async def _apply_snapshot(
        self, items: list[KeyValue], touched: set[tuple[Table, str]], pacer: Pacer | None
    ) -> dict[Table, set[str]]:
        seen: dict[Table, set[str]] = {t: set() for t in self._by_table}
        for kv in items:
            parsed = self.layout.parse_key(kv.key)
            if parsed is None or parsed[0] not in self._by_table:
                continue
            table, ident = parsed
            seen[table].add(ident)
            if parsed in touched:
                continue
            if self._by_table[table].apply(ident, kv.value, kv.mod_revision, force=True):
                self._notify(table, ident)
            if pacer is not None:
                await pacer.step()
        return seen

    async def _drop_unseen(
        self, seen: dict[Table, set[str]], touched: set[tuple[Table, str]], pacer: Pacer | None
    ) -> None:
        for table, mirror in self._by_table.items():
            for gone in [i for i in mirror.items if i not in seen[table]]:
                if (table, gone) in touched:
                    continue
                if mirror.remove(gone):
                    self._notify(table, gone)
                if pacer is not None:
                    await pacer.step()

    async def _follow(self) -> None:
        while True:
            try:
                await self._watch()
            except RevisionCompacted:
                logger.warning("registry watch fell behind compaction; resyncing")
            except StoreUnavailable as exc:
                logger.warning("registry watch lost etcd (%s); serving from the mirror", exc)
                await asyncio.sleep(RESYNC_DELAY_S)
            try:
                await self._sync(pacer=Pacer())
            except StoreUnavailable as exc:
                logger.warning("registry resync failed (%s); retrying", exc)
                await asyncio.sleep(RESYNC_DELAY_S)

    async def _watch(self) -> None:
        events = self.kv.watch_prefix(self.layout.base, start_revision=self._revision + 1)
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                self._apply_event(event)

    def _apply_event(self, event: WatchEvent) -> None:
        self._revision = max(self._revision, event.mod_revision)
        parsed = self.layout.parse_key(event.key)
        if parsed is None:
            return
        table, ident = parsed
        mirror = self._by_table.get(table)
        if mirror is None:
            return
        if event.kind == "DELETE":
            changed = mirror.remove(ident, event.mod_revision)
        else:
            changed = mirror.apply(ident, event.value, event.mod_revision)
        if changed:
            self._notify(table, ident)

    def _notify(self, table: Table, ident: str) -> None:
        for listener in self._listeners:
            try:
                listener(table, ident)
            except Exception:
                logger.exception("registry listener failed")

    # --- writes (compare-and-swap) ----------------------------------------------------

    async def update_model(
        self, model_id: str, change: Callable[[ModelRecord | None], ModelRecord | Unchanged | None]
    ) -> ModelRecord | None:
        """Apply `change` to the current record until the CAS wins; None = deleted/absent."""
        return await self._update(self.models, model_id, change)

    async def update_vmodel(
        self,
        vmodel_id: str,
        change: Callable[[VModelRecord | None], VModelRecord | Unchanged | None],
    ) -> VModelRecord | None:
        return await self._update(self.vmodels, vmodel_id, change)

    async def put_instance(self, instance_id: str, record: InstanceRecord, lease: object) -> None:
        key = self.instances.key_of(instance_id)
        await self.kv.put(key, record.to_json(), lease=lease)  # type: ignore[arg-type]

    async def _update(
        self, mirror: MirrorTable[R], ident: str, change: Callable[[R | None], R | Unchanged | None]
    ) -> R | None:
        key = mirror.key_of(ident)
        current = mirror.items.get(ident)
        if current is not None and not current.confirmed:
            current = await self._refresh(mirror, ident)
        for _ in range(CAS_ATTEMPTS):
            record = current.record if current else None
            wanted = change(record)
            if isinstance(wanted, Unchanged):
                return record
            if wanted is None and current is None:
                # The mirror may not have seen a record another router just wrote.
                current = await self._refresh(mirror, ident)
                if current is None:
                    return None
                continue
            if await self._write(key, current, wanted):
                self._apply_own_write(mirror, ident, current, wanted)
                return wanted
            current = await self._refresh(mirror, ident)
        raise StoreUnavailable(f"could not update {key}: too many concurrent writers")

    def _apply_own_write(
        self, mirror: MirrorTable[R], ident: str, before: Versioned[R] | None, wanted: R | None
    ) -> None:
        """Read-your-writes: show the write in the mirror before its watch event arrives.

        It keeps the old mod revision, so the watch event (always newer) replaces it, and a
        CAS based on it fails and re-reads rather than overwriting anything.
        """
        self._touch(mirror.table, ident)
        if wanted is None:
            if mirror.remove(ident):
                self._notify(mirror.table, ident)
            return
        now = mirror.items.get(ident)
        old_revision = before.mod_revision if before else 0
        if now is not None and now.confirmed and now.mod_revision > old_revision:
            return  # the watch already delivered this write (or a newer one)
        mirror.put(ident, Versioned(wanted, before.mod_revision if before else 0, confirmed=False))
        self._notify(mirror.table, ident)

    async def _write(self, key: str, current: Versioned[R] | None, wanted: R | None) -> bool:
        revision = current.mod_revision if current else 0
        if wanted is None:
            return await self.kv.delete_if(key, mod_revision=revision)
        return await self.kv.put_if(key, wanted.to_json(), mod_revision=revision)

    def _touch(self, table: Table, ident: str) -> None:
        if self._touched is not None:
            self._touched.add((table, ident))

    async def _refresh(self, mirror: MirrorTable[R], ident: str) -> Versioned[R] | None:
        found = await self.kv.get(mirror.key_of(ident))
        self._touch(mirror.table, ident)
        if found is None:
            if mirror.remove(ident):
                self._notify(mirror.table, ident)
            return None
        current = mirror.items.get(ident)
        stale = current is None or not current.confirmed
        if mirror.apply(ident, found.value, found.mod_revision, force=stale):
            self._notify(mirror.table, ident)
        return mirror.items.get(ident)
