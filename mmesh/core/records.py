"""Pure: the etcd key layout and the JSON records stored under it.

This is the one module that knows where things live in etcd and what the
values look like (reference: modelmesh-features.md §4.2). Keys sit under
`<root_prefix>/mm/<service>/`: `registry/<modelId>`, `vmodels/<vmodelId>`,
`instances/<instanceId>` (lease-bound) and `leader`. Values are compact JSON
with the reference's short field names; fields at their default are left out,
and unknown fields are ignored so older readers survive newer writers.

Records are frozen; the `with_*` helpers return new records. Callers: the
router's registry mirror, placement and loading shells, the operator's
registration and status code, the leader tasks.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Self

from mmesh.core.errors import InvalidRecord
from mmesh.core.ids import InstanceId, ModelId, VModelId, id_problem

UNIT_BYTES = 8192
"""Capacity and usage in instance records count 8 KiB units (reference semantics)."""

_JAVA_LONG_MAX = 2**63 - 1  # the reference writes Long.MAX_VALUE as lruTime of an empty cache


def bytes_to_units(size_bytes: int) -> int:
    """Size in 8 KiB units, rounded up: a partly used unit is a used unit."""
    if size_bytes < 0:
        raise ValueError(f"size must not be negative, got {size_bytes}")
    return -(-size_bytes // UNIT_BYTES)


def units_to_bytes(units: int) -> int:
    """Bytes in `units` 8 KiB units."""
    return units * UNIT_BYTES


# ---------------------------------------------------------------- key layout


class Table(enum.StrEnum):
    """The tables under one service's prefix."""

    REGISTRY = "registry"
    VMODELS = "vmodels"
    INSTANCES = "instances"
    LEADER = "leader"


def _join_prefix(root_prefix: str, service: str) -> str:
    """`<root>/mm/<service>/` with repeated and trailing slashes removed.

    A leading slash on the root prefix is kept (etcd keys are plain bytes, so
    "/a" and "a" are different keys); an empty root gives "mm/<service>/".
    """
    segments = [s for s in root_prefix.split("/") if s]
    lead = "/" if root_prefix.startswith("/") else ""
    return lead + "/".join([*segments, "mm", service]) + "/"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Where each table of one mesh service lives in etcd."""

    root_prefix: str
    """The etcd connection's `root_prefix` ("" or e.g. "/mm_ns/foo")."""
    service: str
    """The mesh service name (`MM_SERVICE_NAME`); one key segment."""
    base: str = field(init=False)
    """`<root_prefix>/mm/<service>/`, normalised, ending in '/'."""

    def __post_init__(self) -> None:
        problem = id_problem(self.service)
        if problem is not None:
            raise ValueError(f"invalid service name {self.service!r}: {problem}")
        object.__setattr__(self, "base", _join_prefix(self.root_prefix, self.service))

    def prefix(self, table: Table) -> str:
        """Prefix of every key of `table` (for LEADER: the key itself)."""
        if table is Table.LEADER:
            return self.base + table.value
        return f"{self.base}{table.value}/"

    @property
    def registry_prefix(self) -> str:
        return self.prefix(Table.REGISTRY)

    @property
    def vmodels_prefix(self) -> str:
        return self.prefix(Table.VMODELS)

    @property
    def instances_prefix(self) -> str:
        return self.prefix(Table.INSTANCES)

    @property
    def leader_key(self) -> str:
        return self.prefix(Table.LEADER)

    def model_key(self, model_id: ModelId) -> str:
        return self.registry_prefix + model_id

    def vmodel_key(self, vmodel_id: VModelId) -> str:
        return self.vmodels_prefix + vmodel_id

    def instance_key(self, instance_id: InstanceId) -> str:
        return self.instances_prefix + instance_id

    def _id_under(self, table: Table, key: str) -> str | None:
        prefix = self.prefix(table)
        if not key.startswith(prefix):
            return None
        raw = key[len(prefix) :]
        return raw if id_problem(raw) is None else None

    def parse_model_key(self, key: str) -> ModelId | None:
        """The model id of a registry key; None for any other or malformed key."""
        raw = self._id_under(Table.REGISTRY, key)
        return None if raw is None else ModelId(raw)

    def parse_vmodel_key(self, key: str) -> VModelId | None:
        """The vmodel id of a vmodels key; None for any other or malformed key."""
        raw = self._id_under(Table.VMODELS, key)
        return None if raw is None else VModelId(raw)

    def parse_instance_key(self, key: str) -> InstanceId | None:
        """The instance id of an instances key; None for any other or malformed key."""
        raw = self._id_under(Table.INSTANCES, key)
        return None if raw is None else InstanceId(raw)

    def parse_key(self, key: str) -> tuple[Table, str] | None:
        """Which table `key` belongs to and its id ("" for the leader key)."""
        if key == self.leader_key:
            return (Table.LEADER, "")
        for table in (Table.REGISTRY, Table.VMODELS, Table.INSTANCES):
            raw = self._id_under(table, key)
            if raw is not None:
                return (table, raw)
        return None


# ---------------------------------------------------------------- JSON codec


class _BadValueError(Exception):
    """A JSON value has the wrong shape; the message says how."""


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValueError(f"expected a string, got {type(value).__name__}")
    return value


def _as_int(value: object) -> int:
    # bool is an int subclass in Python but never a valid count or timestamp here
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadValueError(f"expected an integer, got {type(value).__name__}")
    if value < 0:
        raise _BadValueError(f"expected a non-negative integer, got {value}")
    return value


def _as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _BadValueError(f"expected true or false, got {type(value).__name__}")
    return value


def _as_map(convert: Callable[[object], object]) -> Callable[[object], dict[str, object]]:
    def as_map(value: object) -> dict[str, object]:
        if not isinstance(value, dict):
            raise _BadValueError(f"expected an object, got {type(value).__name__}")
        return {_as_str(k): convert(v) for k, v in value.items()}

    return as_map


def _as_str_tuple(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _BadValueError(f"expected a list, got {type(value).__name__}")
    return tuple(_as_str(item) for item in value)


def _to_jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    name: str
    convert: Callable[[object], object]
    required: bool = False
    """Reading fails without it; it is always written."""
    always: bool = False
    """Written even at its default (but optional when reading)."""


_DEFAULTS: dict[type[Any], dict[str, object]] = {}


def _defaults(cls: type[Any]) -> dict[str, object]:
    """Each dataclass field's default (an empty map for map fields), cached per class."""
    cached = _DEFAULTS.get(cls)
    if cached is not None:
        return cached
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    _DEFAULTS[cls] = out
    return out


def _encode(record: object, fields: tuple[_Field, ...]) -> bytes:
    """Compact JSON; a field equal to its default is left out unless required."""
    defaults = _defaults(type(record))
    out: dict[str, object] = {}
    for f in fields:
        value = getattr(record, f.attr)
        if f.required or f.always or f.attr not in defaults or value != defaults[f.attr]:
            out[f.name] = _to_jsonable(value)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def _load_object(data: bytes, key: str) -> dict[str, object]:
    try:
        loaded = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRecord(key, f"not JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise InvalidRecord(key, f"expected a JSON object, got {type(loaded).__name__}")
    return loaded


def _decode(data: bytes, fields: tuple[_Field, ...], key: str) -> dict[str, Any]:
    """Constructor arguments from JSON: unknown names ignored, null = absent."""
    obj = _load_object(data, key)
    kwargs: dict[str, Any] = {}
    for f in fields:
        value = obj.get(f.name)
        if value is None:
            if f.required:
                raise InvalidRecord(key, f"missing field {f.name!r}")
            continue
        try:
            kwargs[f.attr] = f.convert(value)
        except _BadValueError as exc:
            raise InvalidRecord(key, f"field {f.name!r}: {exc}") from exc
    return kwargs


_EMPTY: Mapping[Any, Any] = MappingProxyType({})
"""Every empty map of every record: each map is one more object the collector traverses in a
full collection (a record's failure maps are nearly always empty)."""


def _frozen(mapping: Mapping[InstanceId, Any]) -> Mapping[InstanceId, Any]:
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY


def _without(mapping: Mapping[InstanceId, Any], iid: InstanceId) -> dict[InstanceId, Any]:
    return {k: v for k, v in mapping.items() if k != iid}


# ---------------------------------------------------------------- model record


class CopyState(enum.StrEnum):
    """State of one model copy on one instance, as the registry records it."""

    LOADING = "LOADING"
    """In `instanceIds` only: a load has started."""
    LOADED = "LOADED"
    """In `instanceIds` and `loadedIn`."""
    FAILED = "FAILED"
    """In `failedIn`: the last load there failed and the failure has not expired."""


_MODEL_MAPS = ("instance_ids", "loaded_in", "failed_in", "failures")


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """Value of `registry/<modelId>`: one registered model and its copies."""

    model_type: str
    """`type`: the model type, e.g. "sklearn" or "rt:triton"."""
    model_path: str = ""
    """`mPath`: where the adapter finds the model in storage."""
    encoded_key: str | None = field(default=None, repr=False)
    """`encKey`: ModelInfo.key (storage key JSON); kept out of repr like the reference."""
    instance_ids: Mapping[InstanceId, int] = field(default_factory=dict)
    """`instanceIds`: instance -> load start (epoch ms) of every loading or loaded copy."""
    loaded_in: Mapping[InstanceId, int] = field(default_factory=dict)
    """`loadedIn`: instance -> epoch ms when its copy finished loading."""
    failed_in: Mapping[InstanceId, int] = field(default_factory=dict)
    """`failedIn`: instance -> epoch ms of its last failed load."""
    failures: Mapping[InstanceId, str] = field(default_factory=dict)
    """`fails`: instance -> message of its last failed load."""
    ref_count: int = 0
    """`refs`: vmodels pointing at this model; a model with refs is not deleted."""
    auto_delete: bool = False
    """`autoDel`: delete the model once no vmodel refers to it."""
    last_used_ms: int = 0
    """`lu`: last inference (epoch ms), updated lazily."""
    last_unload_ms: int = 0
    """`lul`: last time a copy was unloaded (epoch ms)."""
    min_copies: int = 0
    """`minCopies`: copies to keep loaded even when unused."""

    def __post_init__(self) -> None:
        # Records are shared between tasks; read-only maps make accidental
        # in-place edits fail loudly instead of corrupting a mirror.
        for name in _MODEL_MAPS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def to_json(self) -> bytes:
        return _encode(self, _MODEL_FIELDS)

    @classmethod
    def from_json(cls, data: bytes, key: str = "<model record>") -> Self:
        """Parse a stored value; raise InvalidRecord naming `key` if it is bad."""
        return cls(**_decode(data, _MODEL_FIELDS, key))

    def copy_states(self) -> dict[InstanceId, CopyState]:
        """State of the copy on each instance the record mentions.

        A copy in `instanceIds` is LOADED when it is also in `loadedIn`, else
        LOADING; an instance only in `failedIn` is FAILED.
        """
        states = {iid: CopyState.FAILED for iid in self.failed_in}
        for iid in self.instance_ids:
            states[iid] = CopyState.LOADED if iid in self.loaded_in else CopyState.LOADING
        return states

    def instances_in(self, state: CopyState) -> frozenset[InstanceId]:
        """The instances whose copy is in `state` (as `copy_states` has it; asked on every
        request forwarded to a peer, so without building that map)."""
        copies, loaded = self.instance_ids, self.loaded_in
        if state is CopyState.LOADED:
            return frozenset(i for i in copies if i in loaded)
        if state is CopyState.LOADING:
            return frozenset(i for i in copies if i not in loaded)
        return frozenset(i for i in self.failed_in if i not in copies)

    def with_copy_loading(self, iid: InstanceId, now_ms: int) -> ModelRecord:
        """A load starts on `iid`: LOADING since now; an old failure there is superseded."""
        return dataclasses.replace(
            self,
            instance_ids={**self.instance_ids, iid: now_ms},
            loaded_in=_without(self.loaded_in, iid),
            failed_in=_without(self.failed_in, iid),
            failures=_without(self.failures, iid),
        )

    def with_copy_loaded(self, iid: InstanceId, now_ms: int) -> ModelRecord:
        """The copy on `iid` is LOADED since now (its load start is kept if known)."""
        return dataclasses.replace(
            self,
            instance_ids={iid: now_ms, **self.instance_ids},
            loaded_in={**self.loaded_in, iid: now_ms},
            failed_in=_without(self.failed_in, iid),
            failures=_without(self.failures, iid),
        )

    def with_copy_failed(self, iid: InstanceId, message: str, now_ms: int) -> ModelRecord:
        """The load on `iid` failed: the copy is gone and the failure is recorded."""
        return dataclasses.replace(
            self,
            instance_ids=_without(self.instance_ids, iid),
            loaded_in=_without(self.loaded_in, iid),
            failed_in={**self.failed_in, iid: now_ms},
            failures={**self.failures, iid: message},
        )

    def without_copy(self, iid: InstanceId) -> ModelRecord:
        """The copy on `iid` is gone (unloaded or evicted); failures are kept."""
        return dataclasses.replace(
            self,
            instance_ids=_without(self.instance_ids, iid),
            loaded_in=_without(self.loaded_in, iid),
        )

    def without_failure(self, iid: InstanceId) -> ModelRecord:
        """Forget the failure recorded for `iid` (it expired)."""
        return dataclasses.replace(
            self,
            failed_in=_without(self.failed_in, iid),
            failures=_without(self.failures, iid),
        )


_MODEL_FIELDS = (
    _Field("model_type", "type", _as_str, required=True),
    _Field("encoded_key", "encKey", _as_str),
    _Field("model_path", "mPath", _as_str),
    _Field("instance_ids", "instanceIds", _as_map(_as_int)),
    _Field("loaded_in", "loadedIn", _as_map(_as_int)),
    _Field("failed_in", "failedIn", _as_map(_as_int)),
    _Field("failures", "fails", _as_map(_as_str)),
    _Field("ref_count", "refs", _as_int),
    _Field("auto_delete", "autoDel", _as_bool),
    _Field("last_used_ms", "lu", _as_int),
    _Field("last_unload_ms", "lul", _as_int),
    _Field("min_copies", "minCopies", _as_int),
)


# ---------------------------------------------------------------- vmodel record


@dataclass(frozen=True, slots=True)
class VModelRecord:
    """Value of `vmodels/<vmodelId>`: an alias and its (possibly pending) target."""

    active_model: ModelId
    """`amid`: the concrete model that requests for the vmodel go to now."""
    target_model: ModelId
    """`tmid`: the model the vmodel moves to; equal to `active_model` when settled."""
    owner: str = ""
    """`o`: who manages the vmodel (e.g. the operator's namespace tag)."""
    target_failed: bool = False
    """`failed`: the target failed to load; the transition is stuck until retried."""

    @property
    def in_transition(self) -> bool:
        """True while requests still go to a model other than the target."""
        return self.active_model != self.target_model

    def to_json(self) -> bytes:
        return _encode(self, _VMODEL_FIELDS)

    @classmethod
    def from_json(cls, data: bytes, key: str = "<vmodel record>") -> Self:
        """Parse a stored value; a missing `tmid` means "no transition"."""
        kwargs = _decode(data, _VMODEL_FIELDS, key)
        kwargs.setdefault("target_model", kwargs["active_model"])
        return cls(**kwargs)

    def with_target(self, target: ModelId) -> VModelRecord:
        """Start moving to `target` (clears an old failure flag)."""
        return dataclasses.replace(self, target_model=target, target_failed=False)

    def with_target_active(self) -> VModelRecord:
        """The target is loaded: requests switch to it."""
        return dataclasses.replace(self, active_model=self.target_model, target_failed=False)


def _as_model_id(value: object) -> ModelId:
    raw = _as_str(value)
    problem = id_problem(raw)
    if problem is not None:
        raise _BadValueError(f"bad model id: {problem}")
    return ModelId(raw)


_VMODEL_FIELDS = (
    _Field("owner", "o", _as_str),
    _Field("active_model", "amid", _as_model_id, required=True),
    _Field("target_model", "tmid", _as_model_id, always=True),
    _Field("target_failed", "failed", _as_bool),
)


# ---------------------------------------------------------------- instance record


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Value of `instances/<instanceId>` (bound to the instance's lease)."""

    lru_time_ms: int | None = None
    """`lruTime`: last use (epoch ms) of the least recently used loaded model; None = empty."""
    model_count: int = 0
    """`count`: models in the instance's cache."""
    capacity_units: int = 0
    """`cap`: cache capacity in 8 KiB units."""
    used_units: int = 0
    """`used`: cache space in use, in 8 KiB units."""
    loading_threads: int = 0
    """`lThreads`: concurrent loads the instance can run."""
    loads_in_progress: int = 0
    """`lInProg`: loads running or queued now."""
    rpm: int = 0
    """`rpm`: requests per minute over the last rate window."""
    shutting_down: bool = False
    """`shutdown`: the instance is draining; never place new copies on it."""
    start_time_ms: int = 0
    """`startTime`: when the instance started (epoch ms)."""
    version: str = ""
    """`vers`: deployment version; newer versions are preferred for placement."""
    location: str = ""
    """`loc`: node address (`MM_LOCATION`)."""
    zone: str = ""
    """`zone`: optional zone (`MM_ZONE`)."""
    labels: tuple[str, ...] = ()
    """`labels`: e.g. "mt:sklearn", "pv:grpc-v2", "rt:mlserver-1.x"."""
    endpoint: str = ""
    """`ep` (ours): "host:port" where peer routers reach this instance's internal port."""
    cold: bool = False
    """`cold` (ours): the instance's model server restarted (or its router did, losing its
    copies) and has not finished a load since: its first load may take far longer than the
    next (a model server starting its workers). Placement sends loads elsewhere until the
    instance has warmed it with a trial load."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # a list would stay mutable

    @property
    def free_units(self) -> int:
        """Unused capacity, never negative."""
        return max(0, self.capacity_units - self.used_units)

    def to_json(self) -> bytes:
        return _encode(self, _INSTANCE_FIELDS)

    @classmethod
    def from_json(cls, data: bytes, key: str = "<instance record>") -> Self:
        """Parse a stored value; the reference's Long.MAX_VALUE lruTime means empty."""
        kwargs = _decode(data, _INSTANCE_FIELDS, key)
        if kwargs.get("lru_time_ms", 0) >= _JAVA_LONG_MAX:
            del kwargs["lru_time_ms"]
        return cls(**kwargs)


_INSTANCE_FIELDS = (
    _Field("lru_time_ms", "lruTime", _as_int),
    _Field("model_count", "count", _as_int),
    _Field("capacity_units", "cap", _as_int),
    _Field("used_units", "used", _as_int),
    _Field("loading_threads", "lThreads", _as_int),
    _Field("loads_in_progress", "lInProg", _as_int),
    _Field("rpm", "rpm", _as_int),
    _Field("shutting_down", "shutdown", _as_bool),
    _Field("start_time_ms", "startTime", _as_int),
    _Field("version", "vers", _as_str),
    _Field("location", "loc", _as_str),
    _Field("zone", "zone", _as_str),
    _Field("labels", "labels", _as_str_tuple),
    _Field("endpoint", "ep", _as_str),
    _Field("cold", "cold", _as_bool),
)
