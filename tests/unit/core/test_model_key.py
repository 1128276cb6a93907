"""The modelKey document: what the operator writes is what the adapter reads."""

from __future__ import annotations

import pytest

from mmesh.core.model_key import InvalidModelKey, ModelKey


def test_written_key_reads_back_equal() -> None:
    key = ModelKey(
        storage_key="localMinIO",
        storage_params={"type": "s3", "bucket": "b"},
        model_type={"name": "sklearn", "version": "1"},
        schema_path="s.json",
    )
    text = key.to_json()
    assert text == (
        '{"storage_key":"localMinIO","storage_params":{"bucket":"b","type":"s3"},'
        '"model_type":{"name":"sklearn","version":"1"},"schema_path":"s.json"}'
    )
    assert ModelKey.parse(text) == key


def test_absent_fields_are_left_out_and_unknown_ones_ignored() -> None:
    assert ModelKey().to_json() == "{}"
    assert ModelKey.parse('{"future_field": 1, "storage_key": "k"}') == ModelKey(storage_key="k")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"disk_size_bytes": -1}', "'disk_size_bytes'"),
        ('{"storage_params": ["s3"]}', "'storage_params'"),
        ('{"bucket": 7}', "'bucket' must be a string"),
        ("[1]", "must be a JSON object, got list"),
    ],
)
def test_faults_name_the_field(raw: str, message: str) -> None:
    with pytest.raises(InvalidModelKey, match=message):
        ModelKey.parse(raw)
