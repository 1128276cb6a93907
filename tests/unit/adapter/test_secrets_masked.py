"""Errors out of a pull carry no storage secret (mmesh.adapter.puller.secrets_masked)."""

from __future__ import annotations

import logging
import traceback

import pytest

from mmesh.adapter.errors import StorageError, StorageUnreachable, UnsupportedStorage
from mmesh.adapter.puller import secrets_masked

SECRETS = frozenset({"s3cr3t-MARKER", "sig=SAS-MARKER"})


def test_our_error_keeps_its_class_with_the_secret_masked() -> None:
    with pytest.raises(StorageUnreachable) as info, secrets_masked(SECRETS):
        try:
            raise ValueError("library says s3cr3t-MARKER")
        except ValueError as cause:
            raise StorageUnreachable("endpoint http://h/?sig=SAS-MARKER down") from cause

    assert str(info.value) == "endpoint http://h/?*** down"
    assert info.value.__cause__ is None  # the library's unmasked message goes with it
    assert "library says" not in "".join(traceback.format_exception(info.value))


def test_our_error_without_a_secret_is_untouched() -> None:
    error = UnsupportedStorage("unsupported storage type 'ftp'")
    with pytest.raises(UnsupportedStorage) as info, secrets_masked(SECRETS):
        raise error

    assert info.value is error and str(error) == "unsupported storage type 'ftp'"


def test_a_library_error_becomes_a_masked_storage_error_and_a_masked_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(StorageError) as info, secrets_masked(SECRETS):
        raise KeyError("credential s3cr3t-MARKER rejected")

    assert type(info.value) is StorageError
    assert "KeyError" in str(info.value) and "***" in str(info.value)
    assert "MARKER" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "pull failed unexpectedly" in caplog.text
    assert "MARKER" not in caplog.text
