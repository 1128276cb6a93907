"""Secret hygiene helpers (mmesh.core.redaction): which values are secret, and masking."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmesh.core.redaction import (
    MASK,
    is_secret_name,
    scrub,
    secret_values,
    settings_error_text,
    url_secrets,
)


@pytest.mark.parametrize(
    "name",
    [
        "access_key_id",
        "secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "password",
        "connection_string",
        "private_key",
        "client_key",
        "token",
        "sas_token",
        "AccountKey",
        "SharedAccessSignature",
        "client_secret",
        "Authorization",
        "headers",
        "api_key",
    ],
)
def test_credential_fields_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["type", "bucket", "endpoint_url", "region", "url", "storage_key", "name", "container"],
)
def test_locating_fields_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_secret_values_of_a_storage_config() -> None:
    configs = {
        "s3": {
            "type": "s3",
            "bucket": "models",
            "endpoint_url": "http://minio:9000",
            "access_key_id": "AKIA-ID-1234",
            "secret_access_key": "s3cr3t-KEY",
        },
        "web": {
            "type": "http",
            "url": "https://host/m?sig=SIGNATURE-99&v=1",
            "headers": {"X-Api": ["hdr-one", "hdr-two"]},
        },
        "az": {
            "type": "azure",
            "connection_string": "AccountName=acc;AccountKey=a2V5LWJ5dGVz;BlobEndpoint=http://x",
        },
        "etcd": {"endpoints": "https://root:etcd-pw@etcd:2379", "userid": "root"},
    }

    found = secret_values(configs)

    for secret in (
        "AKIA-ID-1234",
        "s3cr3t-KEY",
        "sig=SIGNATURE-99&v=1",
        "SIGNATURE-99",
        "hdr-one",
        "hdr-two",
        "a2V5LWJ5dGVz",
        "etcd-pw",
    ):
        assert secret in found
    for public in ("models", "http://minio:9000", "s3", "acc", "root", "1"):
        assert public not in found


def test_values_too_short_to_mask_are_left_out() -> None:
    assert secret_values({"password": "pw", "token": "abcd"}) == {"abcd"}


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("http://u:pass-word@h:1/p", {"pass-word"}),
        ("https://h/p?token=abcdefgh12&x=1", {"token=abcdefgh12&x=1", "abcdefgh12"}),
        ("https://h/p", set()),
        ("not a url", set()),
        ("http://h:99999999/", set()),
        ("http://a:pw-one@h1:2379,http://b:pw-two@h2:2379", {"pw-one", "pw-two"}),
        (
            "BlobEndpoint=https://x/c?sv=1&sig=abcdefghij;AccountName=a",
            {"sv=1&sig=abcdefghij", "abcdefghij"},
        ),
    ],
)
def test_url_secrets(url: str, secrets: set[str]) -> None:
    assert url_secrets(url) == secrets


def test_scrub_masks_every_occurrence_longest_first() -> None:
    text = "key abcdef and abcdef-longer and abcdef"
    assert scrub(text, {"abcdef", "abcdef-longer"}) == f"key {MASK} and {MASK} and {MASK}"


def test_scrub_leaves_text_without_secrets_alone() -> None:
    assert scrub("bucket models not found", {"s3cr3t"}) == "bucket models not found"


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")
    kv_store: str = Field(alias="KV_STORE", pattern="^etcd:")
    port: int = Field(alias="PORT")


def test_settings_errors_name_the_variable_never_its_value(monkeypatch) -> None:
    monkeypatch.setenv("KV_STORE", 'zk:{"password": "PW-MARKER-1"}')
    monkeypatch.setenv("PORT", "not-a-port PW-MARKER-2")
    with pytest.raises(ValidationError) as info:
        _Settings()
    assert "PW-MARKER" in str(info.value)  # pydantic's own text repeats the input

    text = settings_error_text(info.value)

    assert "PW-MARKER" not in text
    assert "KV_STORE: String should match pattern" in text
    assert "PORT: Input should be a valid integer" in text
