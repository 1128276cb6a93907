"""Key layout and record schemas: exact keys, exact JSON names, round trips."""

from __future__ import annotations

import gc
import json

import pytest

from mmesh.core.errors import InvalidRecord
from mmesh.core.ids import InstanceId, ModelId, VModelId
from mmesh.core.records import (
    UNIT_BYTES,
    CopyState,
    InstanceRecord,
    KeyLayout,
    ModelRecord,
    Table,
    VModelRecord,
    bytes_to_units,
    units_to_bytes,
)

A = InstanceId("a1b2c3-xyz12")
B = InstanceId("d4e5f6-uvw34")
C = InstanceId("g7h8i9-rst56")
D = InstanceId("j1k2l3-opq78")
NOW = 1_700_000_000_000

# ---------------------------------------------------------------- key layout


@pytest.mark.parametrize(
    ("root", "base"),
    [
        ("", "mm/svc/"),
        ("/", "/mm/svc/"),
        ("/mm_ns/foo", "/mm_ns/foo/mm/svc/"),
        ("/mm_ns/foo/", "/mm_ns/foo/mm/svc/"),
        ("//mm_ns//foo//", "/mm_ns/foo/mm/svc/"),
        ("modelmesh-serving", "modelmesh-serving/mm/svc/"),
        ("modelmesh-serving/", "modelmesh-serving/mm/svc/"),
    ],
)
def test_base_prefix_normalises_slashes(root, base):
    assert KeyLayout(root, "svc").base == base


def test_keys_of_each_table():
    layout = KeyLayout("/mm_ns/foo", "modelmesh-serving")
    base = "/mm_ns/foo/mm/modelmesh-serving/"
    assert layout.registry_prefix == base + "registry/"
    assert layout.vmodels_prefix == base + "vmodels/"
    assert layout.instances_prefix == base + "instances/"
    assert layout.leader_key == base + "leader"
    assert layout.model_key(ModelId("m1")) == base + "registry/m1"
    assert layout.vmodel_key(VModelId("v1")) == base + "vmodels/v1"
    assert layout.instance_key(A) == base + "instances/" + A


def test_parse_keys_round_trip_and_reject_foreign_keys():
    layout = KeyLayout("", "svc")
    assert layout.parse_model_key(layout.model_key(ModelId("m.1"))) == "m.1"
    assert layout.parse_vmodel_key(layout.vmodel_key(VModelId("v"))) == "v"
    assert layout.parse_instance_key(layout.instance_key(A)) == A
    # other tables, other services, nested paths, empty ids
    assert layout.parse_model_key(layout.vmodel_key(VModelId("v"))) is None
    assert layout.parse_model_key("mm/other/registry/m") is None
    assert layout.parse_model_key("mm/svc/registry/a/b") is None
    assert layout.parse_model_key("mm/svc/registry/") is None
    assert layout.parse_model_key("/mm/svc/registry/m") is None
    assert layout.parse_instance_key("mm/svc/instances/..") is None


def test_parse_key_dispatches_by_table():
    layout = KeyLayout("/r", "svc")
    assert layout.parse_key("/r/mm/svc/registry/m") == (Table.REGISTRY, "m")
    assert layout.parse_key("/r/mm/svc/vmodels/v") == (Table.VMODELS, "v")
    assert layout.parse_key("/r/mm/svc/instances/i") == (Table.INSTANCES, "i")
    assert layout.parse_key("/r/mm/svc/leader") == (Table.LEADER, "")
    assert layout.parse_key("/r/mm/svc/leaderX") is None
    assert layout.parse_key("/r/mm/svc/config") is None


@pytest.mark.parametrize("service", ["", "a/b", ".."])
def test_service_must_be_one_key_segment(service):
    with pytest.raises(ValueError, match="invalid service name"):
        KeyLayout("", service)


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("size", "units"), [(0, 0), (1, 1), (8191, 1), (8192, 1), (8193, 2), (10 * 8192, 10)]
)
def test_bytes_to_units_rounds_up(size, units):
    assert bytes_to_units(size) == units


def test_units_to_bytes():
    assert UNIT_BYTES == 8192
    assert units_to_bytes(3) == 24576
    with pytest.raises(ValueError, match="negative"):
        bytes_to_units(-1)


# ---------------------------------------------------------------- model record


def full_model() -> ModelRecord:
    return ModelRecord(
        model_type="sklearn",
        model_path="sklearn/mnist-svm.joblib",
        encoded_key='{"storage_key":"localMinIO","bucket":"modelmesh-example-models"}',
        instance_ids={A: NOW - 5000, B: NOW - 1000},
        loaded_in={A: NOW - 4000},
        failed_in={C: NOW - 9000},
        failures={C: "out of memory"},
        ref_count=1,
        auto_delete=True,
        last_used_ms=NOW - 100,
        last_unload_ms=NOW - 60_000,
        min_copies=2,
    )


def test_model_record_uses_the_reference_json_names():
    data = json.loads(full_model().to_json())
    assert data == {
        "type": "sklearn",
        "encKey": '{"storage_key":"localMinIO","bucket":"modelmesh-example-models"}',
        "mPath": "sklearn/mnist-svm.joblib",
        "instanceIds": {A: NOW - 5000, B: NOW - 1000},
        "loadedIn": {A: NOW - 4000},
        "failedIn": {C: NOW - 9000},
        "fails": {C: "out of memory"},
        "refs": 1,
        "autoDel": True,
        "lu": NOW - 100,
        "lul": NOW - 60_000,
        "minCopies": 2,
    }


def test_model_record_json_is_compact_and_omits_defaults():
    assert ModelRecord("sklearn").to_json() == b'{"type":"sklearn"}'
    raw = ModelRecord("t", "p", ref_count=0, auto_delete=False).to_json()
    assert raw == b'{"type":"t","mPath":"p"}'


def test_model_record_round_trip():
    record = full_model()
    assert ModelRecord.from_json(record.to_json()) == record
    assert ModelRecord.from_json(ModelRecord("x").to_json()) == ModelRecord("x")


def test_model_record_ignores_unknown_fields_and_reads_reference_json():
    raw = b'{"type":"rt:triton","mPath":"p","instanceIds":{"i1":5},"refs":2,"newField":[1]}'
    record = ModelRecord.from_json(raw)
    assert record == ModelRecord("rt:triton", "p", instance_ids={InstanceId("i1"): 5}, ref_count=2)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b"{}", "missing field 'type'"),
        (b'{"type":null}', "missing field 'type'"),
        (b'{"type":3}', "field 'type': expected a string"),
        (b'{"type":"t","refs":"2"}', "field 'refs': expected an integer"),
        (b'{"type":"t","refs":true}', "field 'refs': expected an integer"),
        (b'{"type":"t","refs":-1}', "non-negative"),
        (b'{"type":"t","autoDel":1}', "field 'autoDel': expected true or false"),
        (b'{"type":"t","instanceIds":[]}', "field 'instanceIds': expected an object"),
        (b'{"type":"t","instanceIds":{"a":"x"}}', "field 'instanceIds': expected an integer"),
        (b'{"type":"t","fails":{"a":1}}', "field 'fails': expected a string"),
    ],
)
def test_bad_model_json_raises_invalid_record_with_key_and_reason(raw, reason):
    with pytest.raises(InvalidRecord) as info:
        ModelRecord.from_json(raw, key="mm/svc/registry/m")
    assert info.value.key == "mm/svc/registry/m"
    assert reason in info.value.reason


def test_model_record_maps_are_read_only():
    record = full_model()
    with pytest.raises(TypeError):
        record.instance_ids[A] = 1  # type: ignore[index]  # the point: it must refuse


def test_empty_maps_are_read_only_too():
    with pytest.raises(TypeError):
        ModelRecord("t").failed_in[A] = 1  # type: ignore[index]  # the point: it must refuse


def test_a_record_with_one_copy_is_three_objects_for_the_collector():
    """A full collection traverses every record of the mirror (10^5 of them): its empty maps
    are one shared object, not one each."""
    gc.collect()
    before = len(gc.get_objects())
    records = [ModelRecord("t", instance_ids={A: NOW}, loaded_in={A: NOW + i}) for i in range(1000)]
    gc.collect()
    assert len(gc.get_objects()) - before <= 3 * len(records) + 1
    assert records[0].failed_in == {} and records[0].failures == {}


def test_encoded_key_is_kept_out_of_repr():
    assert "localMinIO" not in repr(full_model())


# ---------------------------------------------------------------- copy states


def test_copy_states_from_the_three_maps():
    states = full_model().copy_states()
    assert states == {A: CopyState.LOADED, B: CopyState.LOADING, C: CopyState.FAILED}
    assert full_model().instances_in(CopyState.LOADING) == {B}
    assert ModelRecord("t").copy_states() == {}


@pytest.mark.parametrize(
    "record",
    [
        full_model(),
        ModelRecord("t"),
        # A copy loading again where its last load failed, and a stale loadedIn entry.
        ModelRecord(
            "t",
            instance_ids={A: NOW, B: NOW},
            loaded_in={B: NOW, C: NOW},
            failed_in={A: NOW - 1, D: NOW},
        ),
    ],
)
def test_instances_in_each_state_are_those_copy_states_gives(record: ModelRecord) -> None:
    states = record.copy_states()
    for state in CopyState:
        assert record.instances_in(state) == {i for i, s in states.items() if s is state}


def test_copy_lifecycle_loading_loaded_unloaded():
    empty = ModelRecord("t", "p")
    loading = empty.with_copy_loading(A, NOW)
    assert loading.copy_states() == {A: CopyState.LOADING}
    assert loading.instance_ids == {A: NOW}
    assert empty.copy_states() == {}  # the original is untouched

    loaded = loading.with_copy_loaded(A, NOW + 700)
    assert loaded.copy_states() == {A: CopyState.LOADED}
    assert loaded.instance_ids == {A: NOW}  # load start is kept
    assert loaded.loaded_in == {A: NOW + 700}

    gone = loaded.without_copy(A)
    assert gone.copy_states() == {}
    assert gone.instance_ids == {}
    assert gone.loaded_in == {}
    assert json.loads(gone.to_json()) == {"type": "t", "mPath": "p"}


def test_loaded_without_a_recorded_start_uses_now_as_start():
    record = ModelRecord("t").with_copy_loaded(A, NOW)
    assert record.instance_ids == {A: NOW}
    assert record.copy_states() == {A: CopyState.LOADED}


def test_failed_copy_leaves_instance_ids_and_records_the_failure():
    record = ModelRecord("t").with_copy_loading(A, NOW).with_copy_loading(B, NOW)
    failed = record.with_copy_failed(A, "boom", NOW + 10)
    assert failed.copy_states() == {A: CopyState.FAILED, B: CopyState.LOADING}
    assert A not in failed.instance_ids
    assert failed.failed_in == {A: NOW + 10}
    assert failed.failures == {A: "boom"}


def test_new_load_or_success_supersedes_a_failure_but_unload_keeps_it():
    failed = ModelRecord("t").with_copy_failed(A, "boom", NOW)
    assert failed.with_copy_loading(A, NOW + 1).copy_states() == {A: CopyState.LOADING}
    assert failed.with_copy_loading(A, NOW + 1).failures == {}
    assert failed.with_copy_loaded(A, NOW + 1).failed_in == {}
    assert failed.without_copy(A).copy_states() == {A: CopyState.FAILED}
    assert failed.without_failure(A).copy_states() == {}


def test_helpers_keep_other_fields():
    record = full_model()
    changed = record.with_copy_loading(C, NOW)
    assert changed.ref_count == 1
    assert changed.encoded_key == record.encoded_key
    assert changed.min_copies == 2


# ---------------------------------------------------------------- vmodel record


def test_vmodel_record_json_names_and_round_trip():
    record = VModelRecord(
        active_model=ModelId("m__isvc-1111111111"),
        target_model=ModelId("m__isvc-2222222222"),
        owner="ksp-ns1",
        target_failed=True,
    )
    assert json.loads(record.to_json()) == {
        "o": "ksp-ns1",
        "amid": "m__isvc-1111111111",
        "tmid": "m__isvc-2222222222",
        "failed": True,
    }
    assert VModelRecord.from_json(record.to_json()) == record
    assert record.in_transition


def test_vmodel_record_omits_defaults_and_missing_target_means_settled():
    record = VModelRecord(ModelId("m"), ModelId("m"))
    assert record.to_json() == b'{"amid":"m","tmid":"m"}'
    assert not record.in_transition
    assert VModelRecord.from_json(b'{"amid":"m"}') == record


def test_vmodel_transition_helpers():
    record = VModelRecord(ModelId("old"), ModelId("old"), target_failed=True)
    moving = record.with_target(ModelId("new"))
    assert (moving.active_model, moving.target_model, moving.target_failed) == ("old", "new", False)
    done = moving.with_target_active()
    assert (done.active_model, done.target_model) == ("new", "new")
    assert not done.in_transition


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"tmid":"m"}', "missing field 'amid'"),
        (b'{"amid":"a/b"}', "bad model id"),
        (b'{"amid":"m","failed":"yes"}', "expected true or false"),
    ],
)
def test_bad_vmodel_json(raw, reason):
    with pytest.raises(InvalidRecord, match=reason):
        VModelRecord.from_json(raw, key="k")


# ---------------------------------------------------------------- instance record


def full_instance() -> InstanceRecord:
    return InstanceRecord(
        lru_time_ms=NOW - 3_600_000,
        model_count=12,
        capacity_units=bytes_to_units(2 * 1024**3),
        used_units=1000,
        loading_threads=2,
        loads_in_progress=1,
        rpm=350,
        shutting_down=True,
        start_time_ms=NOW - 86_400_000,
        version="7f9c2ba4e8",
        location="10.0.0.7",
        zone="us-east-1a",
        labels=("mt:sklearn", "pv:grpc-v2", "rt:mlserver-1.x"),
    )


def test_instance_record_json_names_and_round_trip():
    record = full_instance()
    assert json.loads(record.to_json()) == {
        "lruTime": NOW - 3_600_000,
        "count": 12,
        "cap": 262144,
        "used": 1000,
        "lThreads": 2,
        "lInProg": 1,
        "rpm": 350,
        "shutdown": True,
        "startTime": NOW - 86_400_000,
        "vers": "7f9c2ba4e8",
        "loc": "10.0.0.7",
        "zone": "us-east-1a",
        "labels": ["mt:sklearn", "pv:grpc-v2", "rt:mlserver-1.x"],
    }
    assert InstanceRecord.from_json(record.to_json()) == record


def test_a_cold_instance_says_so_and_a_record_without_the_field_is_warm():
    assert json.loads(InstanceRecord(cold=True).to_json()) == {"cold": True}
    assert InstanceRecord.from_json(InstanceRecord(cold=True).to_json()).cold
    assert not InstanceRecord.from_json(full_instance().to_json()).cold  # the reference's


def test_empty_instance_has_no_lru_time():
    assert InstanceRecord().to_json() == b"{}"
    assert InstanceRecord.from_json(b"{}").lru_time_ms is None
    # lruTime 0 is a value, not "absent"
    assert InstanceRecord.from_json(InstanceRecord(lru_time_ms=0).to_json()).lru_time_ms == 0
    # the reference writes Long.MAX_VALUE for an empty cache
    assert InstanceRecord.from_json(b'{"lruTime":9223372036854775807}').lru_time_ms is None


def test_labels_are_stored_as_a_tuple():
    # a list is the wrong type on purpose: the record must coerce it
    record = InstanceRecord(labels=["a", "b"])  # type: ignore[arg-type]
    assert record.labels == ("a", "b")


def test_free_units_never_negative():
    assert InstanceRecord(capacity_units=10, used_units=4).free_units == 6
    assert InstanceRecord(capacity_units=10, used_units=14).free_units == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"labels":"mt:x"}', "field 'labels': expected a list"),
        (b'{"labels":[1]}', "expected a string"),
        (b'{"cap":1.5}', "field 'cap': expected an integer"),
        (b"null", "expected a JSON object"),
    ],
)
def test_bad_instance_json(raw, reason):
    with pytest.raises(InvalidRecord, match=reason):
        InstanceRecord.from_json(raw, key="k")
