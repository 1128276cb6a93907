"""Pure layout, config and answer decoding for OVMS and TorchServe, and the modelKey the
storage helper hands a custom runtime."""

from __future__ import annotations

import json

import pytest

from mmesh.adapter.errors import InvalidModelRequest
from mmesh.adapter.layout import (
    OvmsLayout,
    TorchServeLayout,
    plan_ovms_layout,
    plan_torchserve_layout,
    torchserve_store_name,
)
from mmesh.adapter.serverapi import (
    METHOD_INFOS,
    TorchServePorts,
    ovms_error_text,
    ovms_load_failure,
    parse_ovms_config,
    render_ovms_config,
    render_torchserve_config,
    torchserve_error_text,
    torchserve_model_page,
    torchserve_worker_memory,
)
from mmesh.adapter.storage.spec import local_model_key

# ---------------------------------------------------------------- OVMS


def test_ovms_single_file_goes_into_version_1() -> None:
    assert plan_ovms_layout(
        "openvino_ir", pulled_name="m.xml", pulled_is_dir=False, pulled_dirs=[]
    ) == OvmsLayout("1", ".", "1/m.xml")


def test_ovms_onnx_file_is_renamed_model_onnx() -> None:
    layout = plan_ovms_layout("onnx", pulled_name="mnist.onnx", pulled_is_dir=False, pulled_dirs=[])
    assert layout.link == "1/model.onnx"


def test_ovms_versioned_directory_serves_its_highest_version() -> None:
    layout = plan_ovms_layout("onnx", pulled_name="m", pulled_is_dir=True, pulled_dirs=["2", "10"])
    assert layout == OvmsLayout("10", "10", "10")


def test_ovms_plain_directory_is_version_1() -> None:
    layout = plan_ovms_layout("openvino_ir", pulled_name="m", pulled_is_dir=True, pulled_dirs=[])
    assert layout == OvmsLayout("1", ".", "1")
    mixed = plan_ovms_layout("onnx", pulled_name="m", pulled_is_dir=True, pulled_dirs=["1", "x"])
    assert mixed == OvmsLayout("1", ".", "1")
    odd = plan_ovms_layout("onnx", pulled_name="m", pulled_is_dir=True, pulled_dirs=["1", "①"])
    assert odd == OvmsLayout("1", ".", "1")


def test_ovms_config_round_trip_is_sorted_and_stable() -> None:
    text = render_ovms_config({"b": "/models/_ovms_models/b", "a": "/models/_ovms_models/a"})
    doc = json.loads(text)
    assert [e["config"]["name"] for e in doc["model_config_list"]] == ["a", "b"]
    assert parse_ovms_config(text) == {"a": "/models/_ovms_models/a", "b": "/models/_ovms_models/b"}
    assert parse_ovms_config("not json") == {}
    assert render_ovms_config({}) == '{\n "model_config_list": []\n}\n'


def version(state: str, code: str = "OK", message: str = "OK") -> dict[str, object]:
    return {
        "version": "1",
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def test_ovms_load_outcome_from_version_states() -> None:
    status = {
        "good": {"model_version_status": [version("AVAILABLE")]},
        "bad": {"model_version_status": [version("LOADING", "UNKNOWN", "UNKNOWN")]},
        "empty": {"model_version_status": []},
    }
    assert ovms_load_failure(status, "good") is None
    assert ovms_load_failure(status, "bad") == (
        "OVMS did not load model bad: version 1 is LOADING (error_code 'UNKNOWN': 'UNKNOWN')"
    )
    assert "no numeric version directory" in (ovms_load_failure(status, "empty") or "")
    assert ovms_load_failure(status, "absent") == (
        "OVMS reports no status for model absent after the config reload"
    )


def test_ovms_error_body() -> None:
    body = '{"error": "Reloading config file failed. Check server logs for more info."}'
    assert ovms_error_text(500, body) == (
        "HTTP 500: Reloading config file failed. Check server logs for more info."
    )
    assert ovms_error_text(502, "<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"


# ---------------------------------------------------------------- TorchServe


def test_torchserve_store_names_are_one_plain_file_name() -> None:
    assert torchserve_store_name("m__isvc-0123456789", archive=True) == "m__isvc-0123456789.mar"
    assert torchserve_store_name("a/b\\c", archive=False) == "a\\_b\\\\c"


def test_torchserve_layouts() -> None:
    assert plan_torchserve_layout(
        "m", pulled_is_dir=False, pulled_entries=[], has_manifest=False
    ) == TorchServeLayout(".", archive=True)
    assert plan_torchserve_layout(
        "m", pulled_is_dir=True, pulled_entries=["mnist.mar", "README"], has_manifest=False
    ) == TorchServeLayout("mnist.mar", archive=True)
    assert plan_torchserve_layout(
        "m", pulled_is_dir=True, pulled_entries=["MAR-INF", "model.py"], has_manifest=True
    ) == TorchServeLayout(".", archive=False)


def test_torchserve_layout_refuses_what_torchserve_cannot_register() -> None:
    with pytest.raises(InvalidModelRequest, match=r"\(2 found\)"):
        plan_torchserve_layout(
            "m", pulled_is_dir=True, pulled_entries=["a.mar", "b.mar"], has_manifest=False
        )


def test_torchserve_config_frees_7071_for_rest_management() -> None:
    text = render_torchserve_config(
        "/models/_torchserve_models", TorchServePorts(7071, 7070), metric_interval_s=10
    )
    lines = dict(line.split("=", 1) for line in text.splitlines())
    assert lines["management_address"] == "http://127.0.0.1:7071"
    assert lines["grpc_inference_port"] == "7070"
    assert lines["grpc_management_port"] == "7072"
    assert lines["inference_address"] == "http://127.0.0.1:8083"  # 8080 is the router's
    assert lines["model_store"] == "/models/_torchserve_models"
    assert lines["metric_time_interval"] == "10"  # worker memory measured every 10 s, not 60
    assert (lines["enable_model_api"], lines["disable_token_authorization"]) == ("true", "true")


def test_torchserve_error_bodies() -> None:
    body = json.dumps(
        {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}
    )
    assert (
        torchserve_error_text(404, body) == "HTTP 404: ModelNotFoundException: Model not found: x"
    )
    assert torchserve_error_text(500, "boom") == "HTTP 500: boom"


def test_torchserve_pages_and_memory() -> None:
    page = {"nextPageToken": "2", "models": [{"modelName": "a", "modelUrl": "a.mar"}]}
    assert torchserve_model_page(page) == (["a"], "2")
    assert torchserve_model_page({"models": []}) == ([], None)
    describe = [{"workers": [{"memoryUsage": 100}, {"memoryUsage": 50}]}]
    assert torchserve_worker_memory(describe) == 150
    assert torchserve_worker_memory([{"workers": [{"memoryUsage": 100}, {"memoryUsage": 0}]}]) == 0
    assert torchserve_worker_memory([]) == 0


def test_method_infos_name_each_servers_data_plane() -> None:
    assert METHOD_INFOS["ovms"]["tensorflow.serving.PredictionService/Predict"] == (1, 1)
    predictions = "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
    assert METHOD_INFOS["torchserve"][predictions] == (1,)
    assert METHOD_INFOS["mlserver"]["inference.GRPCInferenceService/ModelInfer"] == (1,)


# ---------------------------------------------------------------- storage helper


def test_local_model_key_drops_storage_fields_and_adds_local_facts() -> None:
    raw = json.dumps(
        {
            "storage_key": "s3-main",
            "storage_params": {"bucket": "b", "secret_access_key": "never-forward"},
            "bucket": "old",
            "model_type": {"name": "custom"},
            "schema_path": "s3/path/schema.json",
            "stub": {"size": 5},
        }
    )
    out = json.loads(
        local_model_key(raw, disk_size_bytes=1234, schema_path="/models/m/_schema.json")
    )
    assert out == {
        "model_type": {"name": "custom"},
        "schema_path": "/models/m/_schema.json",
        "stub": {"size": 5},
        "disk_size_bytes": 1234,
    }
    assert json.loads(local_model_key("", disk_size_bytes=0, schema_path=None)) == {
        "disk_size_bytes": 0
    }
    bare = json.loads(local_model_key('{"schema_path": "x"}', disk_size_bytes=1, schema_path=None))
    assert "schema_path" not in bare
