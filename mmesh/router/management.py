"""The ModelMesh management operations: register, unregister, status, ensureLoaded, vmodels.

Records live in etcd (CAS through the registry); statuses are decoded from the mirror.
vmodel transitions are driven here: a vmodel whose target gains a loaded copy is promoted
by whichever router sees it first (the CAS makes that safe), and an auto-delete model is
removed once no vmodel points at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mmesh.core.clock import now_ms
from mmesh.core.records import CopyState, ModelRecord, Table, VModelRecord
from mmesh.router.cluster import records
from mmesh.router.errors import (
    AlreadyExists,
    HasReferents,
    InvalidRequest,
    ModelNotFound,
    RouterError,
    checked_model_id,
    checked_vmodel_id,
)
from mmesh.router.loading import LocalModels
from mmesh.router.modelstatus import (
    ModelState,
    ModelStatusView,
    VModelState,
    decode_model_status,
    decode_vmodel_state,
)
from mmesh.router.registry import UNCHANGED, Registry, Unchanged
from mmesh.router.vmodels import SetVModel, plan_promotion, plan_set_vmodel, referents

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_SETTLED = frozenset({ModelState.LOADED, ModelState.LOADING_FAILED, ModelState.NOT_FOUND})
LAST_USED_AGE_ON_ADD_MS = 6 * HOUR_MS
LAST_USED_AGE_ON_LOAD_NOW_MS = HOUR_MS
SYNC_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ModelInfo:
    type: str
    path: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class VModelStatusView:
    state: VModelState
    active_model: str = ""
    target_model: str = ""
    active: ModelStatusView | None = None
    target: ModelStatusView | None = None
    owner: str = ""


class Management:
    def __init__(
        self,
        *,
        registry: Registry,
        local: LocalModels,
        failure_expiry_ms: int,
        default_owner: str = "",
        drives_transitions: Callable[[], bool],
        place: Callable[[str, ModelRecord], Awaitable[object]] | None = None,
    ) -> None:
        self.registry = registry
        self.local = local
        self.failure_expiry_ms = failure_expiry_ms
        self.default_owner = default_owner
        self._place = place or local.ensure_loaded
        self._by_target: dict[str, set[str]] = {}
        self.drives_transitions = drives_transitions
        """Whether this router loads the targets of vmodels moved by others (the leader)."""
        self._tasks: set[asyncio.Task[None]] = set()
        registry.on_change(self._on_registry_change)

    # --- models ----------------------------------------------------------------------

    def model_status(self, model_id: str) -> ModelStatusView:
        record = self.registry.models.get(model_id)
        iid = self.local.instance_id
        if record is not None and iid not in record.loaded_in and self.local.is_loaded(model_id):
            # This router knows its copy is loaded before the registry write lands.
            record = record.with_copy_loaded(iid, now_ms())
        return decode_model_status(
            record, now_ms=now_ms(), failure_expiry_ms=self.failure_expiry_ms
        )

    async def register(
        self,
        raw_id: str,
        info: ModelInfo,
        *,
        load_now: bool,
        sync: bool,
        last_used_ms: int = 0,
        auto_delete: bool = False,
        min_copies: int = 0,
    ) -> ModelStatusView:
        model_id = checked_model_id(raw_id)
        if not info.type:
            raise InvalidRequest("modelInfo.type must be non-empty")
        age = LAST_USED_AGE_ON_LOAD_NOW_MS if load_now else LAST_USED_AGE_ON_ADD_MS
        fresh = ModelRecord(
            model_type=info.type,
            model_path=info.path,
            encoded_key=info.key or None,
            auto_delete=auto_delete,
            last_used_ms=last_used_ms or now_ms() - age,
            min_copies=min_copies,
        )

        def register(rec: ModelRecord | None) -> ModelRecord | Unchanged:
            if rec is None:
                return fresh
            if (rec.model_type, rec.model_path, rec.encoded_key or "") != (
                info.type,
                info.path,
                info.key,
            ):
                raise AlreadyExists(
                    f"Model already exists with different type/path/key: {model_id}"
                )
            if min_copies != rec.min_copies:
                return replace(rec, min_copies=min_copies)
            return UNCHANGED

        await self.registry.update_model(model_id, register)
        if load_now:
            await self._trigger_load(model_id, sync=sync)
        return self.model_status(model_id)

    async def unregister(self, raw_id: str) -> None:
        model_id = checked_model_id(raw_id)
        users = referents(dict(self._vmodel_records()), model_id)
        if users:
            raise HasReferents(f"model {model_id} has referents: {', '.join(users)}")
        await self.registry.update_model(model_id, lambda rec: None)
        self.local.evict(model_id)

    async def ensure_loaded(
        self,
        raw_id: str,
        *,
        sync: bool,
        last_used_ms: int = 0,
        here: bool = False,
        extra: bool = False,
    ) -> ModelStatusView:
        """Trigger a load somewhere in the mesh; with `here` (a peer placed the copy on this
        instance) load it locally and let load errors reach the caller."""
        model_id = checked_model_id(raw_id)
        record = self.registry.models.get(model_id)
        if record is None:
            raise ModelNotFound(f"model {model_id} not found")
        if here:
            await self.local.ensure_loaded(model_id, record, extra=extra)
        else:
            await self._trigger_load(model_id, sync=sync)
        return self.model_status(model_id)

    async def _trigger_load(self, model_id: str, *, sync: bool) -> None:
        record = self.registry.models.get(model_id)
        if record is None:
            raise ModelNotFound(f"model {model_id} not found")
        load = asyncio.ensure_future(self._place(model_id, record))
        load.add_done_callback(_log_failure(model_id))
        if sync:
            with contextlib.suppress(RouterError):  # reported through the status
                await load
            await self._mirror_settled(model_id)

    async def _mirror_settled(self, model_id: str, timeout_s: float = 2.0) -> None:
        """A copy loaded by a peer reaches this mirror through the watch a moment later;
        a synchronous caller should see the outcome in the status it gets back."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.model_status(model_id).state not in _SETTLED:
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.005)

    # --- vmodels ---------------------------------------------------------------------

    def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusView:
        record = self.registry.vmodels.get(vmodel_id)
        if record is None or (owner and record.owner != owner):
            return VModelStatusView(
                VModelState.NOT_FOUND,
                active=decode_model_status(None, now_ms=0, failure_expiry_ms=1),
            )
        active = self.model_status(record.active_model)
        target = self.model_status(record.target_model) if record.in_transition else None
        return VModelStatusView(
            decode_vmodel_state(record),
            record.active_model,
            record.target_model,
            active,
            target,
            record.owner,
        )

    async def set_vmodel(
        self,
        raw_vmodel_id: str,
        raw_target: str,
        *,
        info: ModelInfo | None = None,
        owner: str = "",
        update_only: bool = False,
        expected_target: str = "",
        auto_delete: bool = False,
        load_now: bool = False,
        force: bool = False,
        sync: bool = False,
        min_copies: int = 0,
    ) -> VModelStatusView:
        vmodel_id, target = checked_vmodel_id(raw_vmodel_id), checked_model_id(raw_target)
        req = SetVModel(
            vmodel_id, target, owner, update_only, expected_target, force, self.default_owner
        )
        before = self.registry.vmodels.get(vmodel_id)
        # Refuse before creating the target: a rejected call must not leave an orphan model.
        plan_set_vmodel(before, req, active_loaded=False)
        if info is not None:
            await self.register(
                target,
                info,
                load_now=False,
                sync=False,
                auto_delete=auto_delete,
                min_copies=min_copies,
            )
        elif self.registry.models.get(target) is None:
            raise ModelNotFound(f"model {target} not found")
        after = await self.registry.update_vmodel(
            vmodel_id,
            lambda cur: plan_set_vmodel(
                cur, req, active_loaded=self._loaded(cur.active_model if cur else target)
            ),
        )
        assert after is not None
        self._index(vmodel_id, after)
        if before is not None:
            kept = {after.active_model, after.target_model}
            for dropped in {before.active_model, before.target_model} - kept:
                self._spawn(self._retire(dropped))
        if after.in_transition or load_now:
            await self._trigger_load(after.target_model, sync=False)
            self._spawn(self._advance(vmodel_id))
        if sync:
            await self._wait_settled(vmodel_id, wait_loaded=load_now)
        return self.vmodel_status(vmodel_id)

    async def delete_vmodel(self, raw_vmodel_id: str, owner: str = "") -> None:
        vmodel_id = checked_vmodel_id(raw_vmodel_id)
        current = self.registry.vmodels.get(vmodel_id)
        if current is None or (owner and current.owner != owner):
            return
        deleted = await self.registry.update_vmodel(
            vmodel_id, lambda cur: None if cur and (not owner or cur.owner == owner) else UNCHANGED
        )
        if deleted is None:
            for model_id in {current.active_model, current.target_model}:
                await self._retire(model_id)

    def _loaded(self, model_id: str) -> bool:
        record = self.registry.models.get(model_id)
        return record is not None and bool(record.loaded_in)

    def _vmodel_records(self) -> list[tuple[str, VModelRecord]]:
        return records(self.registry.vmodels)

    async def _wait_settled(self, vmodel_id: str, *, wait_loaded: bool) -> None:
        while True:
            record = self.registry.vmodels.get(vmodel_id)
            if record is None or record.target_failed:
                return
            status = self.model_status(record.target_model).state
            if status in (ModelState.LOADING_FAILED, ModelState.NOT_FOUND):
                return
            settled = not record.in_transition
            if settled and (not wait_loaded or status is ModelState.LOADED):
                return
            await asyncio.sleep(SYNC_POLL_S)

    # --- transitions -----------------------------------------------------------------

    def _on_registry_change(self, table: Table, ident: str) -> None:
        if table is Table.VMODELS:
            record = self.registry.vmodels.get(ident)
            self._index(ident, record)
            if record is not None and record.in_transition:
                self._spawn(self._advance(ident))  # e.g. the operator moved the target
            return
        if table is Table.REGISTRY:
            for vmodel_id in list(self._by_target.get(ident, ())):
                self._spawn(self._advance(vmodel_id))

    def redrive_transitions(self) -> None:
        """Leader duty: push every vmodel still in transition again. A target whose load
        failed is left alone until its failures expire; then this is what loads it again
        (nothing else would: no registry event comes when a failure expires)."""
        for vmodel_id in sorted({v for users in self._by_target.values() for v in users}):
            self._spawn(self._advance(vmodel_id))

    def _index(self, vmodel_id: str, record: VModelRecord | None) -> None:
        for users in self._by_target.values():
            users.discard(vmodel_id)
        if record is not None and record.in_transition:
            self._by_target.setdefault(record.target_model, set()).add(vmodel_id)

    async def _advance(self, vmodel_id: str) -> None:
        current = self.registry.vmodels.get(vmodel_id)
        if current is None or not current.in_transition:
            return
        target = self.registry.models.get(current.target_model)
        loaded = target is not None and bool(target.instances_in(CopyState.LOADED))
        failed = self.model_status(current.target_model).state is ModelState.LOADING_FAILED
        active_loaded = self._loaded(current.active_model)
        unplaced = target is not None and not target.instance_ids and not failed
        if active_loaded and unplaced and self.drives_transitions():
            await self._trigger_load(current.target_model, sync=False)

        def promote(cur: VModelRecord | None) -> VModelRecord | Unchanged:
            if cur is None:
                return UNCHANGED
            plan = plan_promotion(
                cur, target_loaded=loaded, target_failed=failed, active_loaded=active_loaded
            )
            return plan or UNCHANGED

        after = await self.registry.update_vmodel(vmodel_id, promote)
        if after is not None and after.active_model != current.active_model:
            logger.info(
                "vmodel %s now serves %s (was %s)",
                vmodel_id,
                after.active_model,
                current.active_model,
            )
            await self._retire(current.active_model)

    async def _retire(self, model_id: str) -> None:
        """Delete an auto-delete model once nothing refers to it."""
        record = self.registry.models.get(model_id)
        if record is None or not record.auto_delete:
            return
        if referents(dict(self._vmodel_records()), model_id):
            return
        await self.registry.update_model(
            model_id, lambda rec: None if rec is not None and rec.auto_delete else UNCHANGED
        )
        self.local.evict(model_id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure("vmodel transition"))


def _log_failure(what: str) -> Callable[[asyncio.Future[Any]], None]:
    def log(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and not isinstance(exc, RouterError):
            logger.error("%s failed: %r", what, exc)

    return log
