"""I/O: the operator's only etcd access: vmodel and model records, and the registry watch.

For an InferenceService the operator writes (reference: modelmesh-features.md §3.5):

- `registry/<name>__isvc-<hash>`: a ModelRecord (type, path, key, `autoDel: true`, minimum
  copies), created once (compare-and-swap on "does not exist"); the routers own its copies
  from then on, the operator only moves its minimum copies (compare-and-swap);
- `vmodels/<name>`: created with active = target = that model; on a spec change only the
  target moves (the routers load it, promote it once a copy is LOADED and delete the old
  auto-delete model). A target dropped before it was promoted is deleted here, and a vmodel
  whose active model record is gone switches at once (nothing would be lost).

Deleting removes the vmodel and every auto-delete `<name>__isvc-*` model. Every write is a
compare-and-swap, so a restart or two concurrent reconciles neither lose nor duplicate
anything. `Registrations.watch` follows the whole mesh prefix and tells the status reporters
which InferenceService changed; it also mirrors the router instances' labels so the status can
say "waiting for a runtime pod". Keys live under `<root>/mm_ns/<namespace>/mm/<service>/`
(cluster scope) or `<root>/mm/<service>/` (namespace scope), as the runtime pods see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from mmesh.core.errors import InvalidRecord, RevisionCompacted, StoreUnavailable
from mmesh.core.ids import ModelId, VModelId
from mmesh.core.kv import KeyValue, KVStore, WatchEvent
from mmesh.core.records import InstanceRecord, KeyLayout, ModelRecord, Table, VModelRecord
from mmesh.operator.errors import FailureReason, InvalidSpec
from mmesh.operator.naming import ISVC_SOURCE, parse_concrete_model_id
from mmesh.operator.translation import Registration

logger = logging.getLogger(__name__)

NAMESPACES_SEGMENT = "mm_ns"
WATCH_RETRY_S = 1.0
_PROBE = "x"

Notify = Callable[[str | None, str | None], None]
"""Called with (namespace, InferenceService name): None name = every one of the namespace,
None namespace = everything (after a resync)."""


@dataclass(frozen=True, slots=True)
class MeshScope:
    """Where each namespace's mesh lives in etcd."""

    root_prefix: str
    namespace_scope: bool = False
    namespace: str = ""
    """The operator's namespace (the only one in namespace scope)."""

    def root_for(self, namespace: str) -> str:
        """The root prefix the runtime pods of `namespace` use (their etcd Secret's)."""
        if self.namespace_scope:
            return self.root_prefix
        return f"{self.root_prefix.rstrip('/')}/{NAMESPACES_SEGMENT}/{namespace}"

    def layout(self, namespace: str, service: str) -> KeyLayout:
        return KeyLayout(self.root_for(namespace), service)

    @property
    def watch_prefix(self) -> str:
        """One prefix covering every managed namespace's mesh."""
        base = KeyLayout(self.root_for(_PROBE), _PROBE).base
        if self.namespace_scope:
            return base[: -len(f"{_PROBE}/")]
        cut = base.index(f"{NAMESPACES_SEGMENT}/{_PROBE}/") + len(NAMESPACES_SEGMENT) + 1
        return base[:cut]

    def split_key(self, key: str) -> tuple[str, Table, str] | None:
        """(namespace, table, id) of a key under the watch prefix, else None."""
        prefix = self.watch_prefix
        if not key.startswith(prefix):
            return None
        parts = key[len(prefix) :].split("/")
        if not self.namespace_scope:
            if len(parts) != 5 or parts[1] != "mm":
                return None
            namespace, parts = parts[0], parts[2:]
        else:
            namespace = self.namespace
        if len(parts) != 3 or parts[1] not in (Table.REGISTRY, Table.VMODELS, Table.INSTANCES):
            return None
        return namespace, Table(parts[1]), parts[2]


def _model_record(reg: Registration) -> ModelRecord:
    info = reg.model_info
    return ModelRecord(
        model_type=info.type,
        model_path=info.path,
        encoded_key=info.key,
        auto_delete=True,
        min_copies=reg.min_copies,
    )


def _retarget(current: VModelRecord, model: ModelId, *, active_gone: bool) -> VModelRecord:
    """The vmodel after the spec asks for `model` (routers promote; see module doc)."""
    updated = current if current.target_model == model else current.with_target(model)
    return updated.with_target_active() if active_gone else updated


class Registrations:
    """Registers InferenceServices in the mesh's etcd records (implements the etcd port)."""

    def __init__(self, kv: KVStore, scope: MeshScope) -> None:
        self.kv = kv
        self.scope = scope
        self._instances: dict[str, tuple[frozenset[str], bool]] = {}
        """Instance key -> (labels, shutting down), fed by `watch`."""

    # ------------------------------------------------------------ writes

    async def upsert(self, reg: Registration, service: str) -> VModelRecord:
        """Make the records say what `reg` says; raise InvalidSpec on a foreign vmodel."""
        layout = self.scope.layout(reg.namespace, service)
        await self._put_model(layout.model_key(reg.model_id), reg)
        vkey = layout.vmodel_key(reg.vmodel_id)
        while True:
            found = await self.kv.get(vkey)
            if found is None:
                record = VModelRecord(reg.model_id, reg.model_id, owner=reg.owner)
                if await self.kv.put_if(vkey, record.to_json(), mod_revision=0):
                    return record
                continue
            current = VModelRecord.from_json(found.value, vkey)
            _check_owner(current, reg)
            if current.target_model == reg.model_id and not current.in_transition:
                return current
            active_gone = await self.kv.get(layout.model_key(current.active_model)) is None
            record = _retarget(current, reg.model_id, active_gone=active_gone)
            if record == current:
                return current
            if await self.kv.put_if(vkey, record.to_json(), mod_revision=found.mod_revision):
                kept = {record.active_model, record.target_model}
                for dropped in {current.active_model, current.target_model} - kept:
                    await self._delete_model(layout, dropped)
                logger.info(
                    "vmodel %s/%s now targets %s", reg.namespace, reg.vmodel_id, reg.model_id
                )
                return record

    async def _put_model(self, key: str, reg: Registration) -> None:
        """Create the model record, or bring its minimum copies in line with `reg`."""
        while True:
            found = await self.kv.get(key)
            if found is None:
                if await self.kv.put_if(key, _model_record(reg).to_json(), mod_revision=0):
                    return
                continue
            try:
                current = ModelRecord.from_json(found.value, key)
            except InvalidRecord:
                logger.warning("not updating %s: unreadable record", key)
                return
            if current.min_copies == reg.min_copies:
                return
            record = replace(current, min_copies=reg.min_copies)
            if await self.kv.put_if(key, record.to_json(), mod_revision=found.mod_revision):
                logger.info("model %s now keeps %d minimum copies", key, reg.min_copies)
                return

    async def delete(
        self, namespace: str, vmodel_id: VModelId, service: str, owner: str = ISVC_SOURCE
    ) -> None:
        """Remove the vmodel (if it is `owner`'s) and its auto-delete concrete models."""
        layout = self.scope.layout(namespace, service)
        vkey = layout.vmodel_key(vmodel_id)
        while (found := await self.kv.get(vkey)) is not None:
            current = VModelRecord.from_json(found.value, vkey)
            if current.owner and current.owner != owner:
                break  # someone else's vmodel of the same name
            if await self.kv.delete_if(vkey, mod_revision=found.mod_revision):
                break
        models, _ = await self.kv.range_prefix(f"{layout.registry_prefix}{vmodel_id}__{owner}-")
        for item in models:
            await self._delete_if_auto(item)

    async def _delete_model(self, layout: KeyLayout, model_id: ModelId) -> None:
        found = await self.kv.get(layout.model_key(model_id))
        if found is not None:
            await self._delete_if_auto(found)

    async def _delete_if_auto(self, item: KeyValue) -> None:
        try:
            auto = ModelRecord.from_json(item.value, item.key).auto_delete
        except InvalidRecord:
            logger.warning("not deleting %s: unreadable record", item.key)
            return
        if auto and await self.kv.delete_if(item.key, mod_revision=item.mod_revision):
            logger.info("deleted model record %s", item.key)

    # ------------------------------------------------------------ reads

    async def observe(
        self, namespace: str, vmodel_id: VModelId, service: str
    ) -> tuple[VModelRecord | None, dict[ModelId, ModelRecord]]:
        """The vmodel record and the records of its active and target models."""
        layout = self.scope.layout(namespace, service)
        found = await self.kv.get(layout.vmodel_key(vmodel_id))
        if found is None:
            return None, {}
        vmodel = VModelRecord.from_json(found.value, found.key)
        models: dict[ModelId, ModelRecord] = {}
        for model_id in {vmodel.active_model, vmodel.target_model}:
            item = await self.kv.get(layout.model_key(model_id))
            if item is not None:
                models[model_id] = ModelRecord.from_json(item.value, item.key)
        return vmodel, models

    def has_instance_for(self, namespace: str, service: str, labels: Iterable[str]) -> bool:
        """Whether a live (not draining) router of the mesh carries every label."""
        prefix = self.scope.layout(namespace, service).instances_prefix
        wanted = frozenset(labels)
        return any(
            key.startswith(prefix) and not draining and wanted <= have
            for key, (have, draining) in self._instances.items()
        )

    # ------------------------------------------------------------ watch

    async def watch(self, notify: Notify) -> None:
        """Follow the mesh prefix until cancelled or the store closes; resync after errors."""
        prefix = self.scope.watch_prefix
        while True:
            try:
                items, revision = await self.kv.range_prefix(prefix)
                self._instances = {}
                for item in items:
                    self._apply(WatchEvent("PUT", item.key, item.value, item.mod_revision), None)
                notify(None, None)
                events = self.kv.watch_prefix(prefix, start_revision=revision + 1)
                async with contextlib.aclosing(events) as stream:
                    async for event in stream:
                        self._apply(event, notify)
                return
            except (StoreUnavailable, RevisionCompacted) as exc:
                logger.warning("registry watch failed (%s); resyncing", exc)
                await asyncio.sleep(WATCH_RETRY_S)

    def _apply(self, event: WatchEvent, notify: Notify | None) -> None:
        split = self.scope.split_key(event.key)
        if split is None:
            return
        namespace, table, ident = split
        if table is Table.INSTANCES:
            if self._update_instance(event) and notify is not None:
                notify(namespace, None)
            return
        name = ident if table is Table.VMODELS else _isvc_of_model(ident)
        if name is not None and notify is not None:
            notify(namespace, name)

    def _update_instance(self, event: WatchEvent) -> bool:
        """Mirror an instance's labels; True if what the status depends on changed."""
        if event.kind == "DELETE":
            return self._instances.pop(event.key, None) is not None
        try:
            record = InstanceRecord.from_json(event.value, event.key)
        except InvalidRecord:
            return False
        entry = (frozenset(record.labels), record.shutting_down)
        if self._instances.get(event.key) == entry:
            return False
        self._instances[event.key] = entry
        return True


def _isvc_of_model(model_id: str) -> str | None:
    parsed = parse_concrete_model_id(model_id)
    return parsed[0] if parsed is not None and parsed[1] == ISVC_SOURCE else None


def _check_owner(current: VModelRecord, reg: Registration) -> None:
    if current.owner and current.owner != reg.owner:
        raise InvalidSpec(
            FailureReason.INVALID_PREDICTOR_SPEC,
            f"vmodel {reg.vmodel_id} already exists with the same name from a different "
            f"source ({current.owner!r})",
        )
