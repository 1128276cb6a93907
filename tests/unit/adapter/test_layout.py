from __future__ import annotations

import pytest

from mmesh.adapter.errors import InvalidModelRequest, UnsupportedModelType
from mmesh.adapter.layout import (
    model_format,
    parse_schema,
    plan_triton_layout,
    render_mlserver_settings,
)
from mmesh.adapter.sizing import estimate_size_bytes


@pytest.mark.parametrize(
    ("model_type", "key_type", "expected"),
    [
        ("sklearn", None, "sklearn"),
        ("mt:sklearn", None, "sklearn"),
        ("mt:xgboost:1", None, "xgboost"),
        ("mt:lightgbm|pv:grpc-v2", None, "lightgbm"),
        ("rt:mlserver-1.x", {"name": "SKLearn", "version": "0"}, "sklearn"),
        ("", None, ""),
    ],
)
def test_model_format_from_type_or_key(model_type, key_type, expected) -> None:
    assert model_format(model_type, key_type) == expected


@pytest.mark.parametrize(
    ("fmt", "implementation"),
    [
        ("sklearn", "mlserver_sklearn.SKLearnModel"),
        ("xgboost", "mlserver_xgboost.XGBoostModel"),
        ("lightgbm", "mlserver_lightgbm.LightGBMModel"),
    ],
)
def test_mlserver_settings_pick_the_implementation(fmt, implementation) -> None:
    settings = render_mlserver_settings("m1", fmt, model_uri="/models/m1/model.joblib")
    assert settings == {
        "implementation": implementation,
        "name": "m1",
        "parameters": {"uri": "/models/m1/model.joblib"},
    }


def test_mlserver_settings_reject_unsupported_type_naming_supported_ones() -> None:
    with pytest.raises(UnsupportedModelType, match=r"'tensorflow' is not supported by mlserver"):
        render_mlserver_settings("m1", "tensorflow", model_uri="/x")


def test_shipped_mlserver_settings_keep_everything_but_name_and_uri() -> None:
    shipped = {
        "name": "whatever",
        "implementation": "custom.Model",
        "parameters": {"uri": "./weights", "version": "v7"},
        "max_batch_size": 4,
    }
    settings = render_mlserver_settings(
        "m1", "unknownfmt", model_uri="/abs/weights", user_settings=shipped
    )
    assert settings["name"] == "m1"
    assert settings["implementation"] == "custom.Model"
    assert settings["parameters"] == {"uri": "/abs/weights", "version": "v7"}
    assert settings["max_batch_size"] == 4
    assert shipped["name"] == "whatever"  # input untouched


def test_schema_becomes_mlserver_inputs_and_outputs() -> None:
    schema = parse_schema(
        '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],'
        ' "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}]}'
    )
    settings = render_mlserver_settings("m", "sklearn", model_uri="/u", schema=schema)
    assert settings["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert settings["outputs"] == [{"name": "y", "datatype": "INT64", "shape": [-1]}]


@pytest.mark.parametrize("text", ["not json", "[1, 2]"])
def test_bad_schema_is_rejected(text) -> None:
    with pytest.raises(InvalidModelRequest, match="model schema"):
        parse_schema(text)


def test_triton_bare_onnx_file_becomes_version_one() -> None:
    layout = plan_triton_layout(
        "m1", "onnx", pulled_is_dir=False, pulled_entries=[], user_config=None
    )
    assert layout.links == ((".", "1/model.onnx"),)
    assert layout.config_text == 'name: "m1"\nbackend: "onnxruntime"\n'


def test_triton_savedmodel_dir_uses_platform() -> None:
    layout = plan_triton_layout(
        "m1",
        "tensorflow",
        pulled_is_dir=True,
        pulled_entries=["saved_model.pb", "variables"],
        user_config=None,
    )
    assert layout.links == ((".", "1/model.savedmodel"),)
    assert 'platform: "tensorflow_savedmodel"' in layout.config_text


def test_triton_native_layout_is_kept_and_renamed() -> None:
    config = 'name: "orig"\nbackend: "onnxruntime"\ninput [\n  {\n    name: "x"\n  }\n]\n'
    layout = plan_triton_layout(
        "m1",
        "onnx",
        pulled_is_dir=True,
        pulled_entries=["1", "3", "config.pbtxt"],
        user_config=config,
    )
    assert layout.links == (("1", "1"), ("3", "3"))
    assert layout.config_text.startswith('name: "m1"\n')
    assert '    name: "x"' in layout.config_text  # nested tensor names untouched


def test_triton_rejects_unknown_format() -> None:
    with pytest.raises(UnsupportedModelType, match="not supported by triton"):
        plan_triton_layout(
            "m1", "sklearn", pulled_is_dir=False, pulled_entries=[], user_config=None
        )


@pytest.mark.parametrize(
    ("disk", "expected"), [(None, 1000), (0, 1000), (400, 500), (1, 2), (1_000_000, 1_250_000)]
)
def test_size_is_disk_times_multiplier_or_default(disk, expected) -> None:
    assert estimate_size_bytes(disk, multiplier=1.25, default_bytes=1000) == expected
