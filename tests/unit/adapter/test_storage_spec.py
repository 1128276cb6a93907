"""Rules of mmesh.adapter.storage.spec: modelKey parsing, storage resolution, local paths."""

from __future__ import annotations

import ast
import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from mmesh.adapter.errors import InvalidModelRequest, UnknownStorageKey, UnsupportedStorage
from mmesh.adapter.storage import spec as spec_module
from mmesh.adapter.storage.spec import (
    ModelKey,
    StorageSpec,
    StorageType,
    object_relative_path,
    parse_model_key,
    plan_local_target,
    redact_url,
    resolve_storage,
)

ROOT = PurePosixPath("/models")

S3_MINIO = {
    "type": "s3",
    "access_key_id": "AKIAMINIO",
    "secret_access_key": "minio-secret",
    "endpoint_url": "http://minio:9000",
    "region": "us-south",
    "bucket": "models",
}
HTTP_SITE = {"type": "http", "url": "https://files.example.com/base"}
PVC_CLAIM = {"type": "pvc", "name": "claim-a"}


def key(**fields: Any) -> ModelKey:
    return parse_model_key(json.dumps(fields))


# --- parse_model_key -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", "   ", "{}"])
def test_empty_model_key_is_an_empty_key(raw: str) -> None:
    assert parse_model_key(raw) == ModelKey()
    assert dict(parse_model_key(raw).storage_params) == {}


def test_model_key_fields_are_parsed() -> None:
    parsed = key(
        storage_key="minio",
        storage_params={"type": "s3", "bucket": "b1"},
        model_type={"name": "sklearn", "version": "1"},
        schema_path="schemas/s.json",
        disk_size_bytes=1234,
        unknown_field="ignored",
    )
    assert parsed.storage_key == "minio"
    assert dict(parsed.storage_params) == {"type": "s3", "bucket": "b1"}
    assert parsed.model_type is not None and dict(parsed.model_type) == {
        "name": "sklearn",
        "version": "1",
    }
    assert parsed.schema_path == "schemas/s.json"
    assert parsed.disk_size_bytes == 1234


def test_parsed_model_key_cannot_be_mutated() -> None:
    parsed = key(storage_params={"type": "s3"})
    with pytest.raises(TypeError):
        parsed.storage_params["type"] = "http"  # type: ignore[index]  # proving it's read-only


def test_deprecated_bucket_becomes_a_storage_param() -> None:
    assert key(bucket="legacy").storage_params["bucket"] == "legacy"
    both = key(bucket="legacy", storage_params={"bucket": "new"})
    assert both.storage_params["bucket"] == "new"


@pytest.mark.parametrize("raw", ["{", "not json", '{"storage_key": }'])
def test_bad_json_is_an_invalid_request(raw: str) -> None:
    with pytest.raises(InvalidModelRequest, match="not valid JSON"):
        parse_model_key(raw)


@pytest.mark.parametrize("raw", ["[]", "1", '"s"', "null"])
def test_model_key_must_be_an_object(raw: str) -> None:
    with pytest.raises(InvalidModelRequest, match="must be a JSON object"):
        parse_model_key(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("storage_key", 1),
        ("storage_params", "type=s3"),
        ("storage_params", ["s3"]),
        ("bucket", 3),
        ("schema_path", ["a"]),
        ("model_type", "sklearn"),
        ("disk_size_bytes", "10"),
        ("disk_size_bytes", -1),
        ("disk_size_bytes", True),
        ("disk_size_bytes", 1.5),
    ],
)
def test_wrongly_typed_fields_are_named(field: str, value: Any) -> None:
    with pytest.raises(InvalidModelRequest, match=field):
        parse_model_key(json.dumps({field: value}))


# --- resolve_storage: which entry --------------------------------------------------------------


def test_explicit_storage_key_selects_that_entry() -> None:
    configs = {"minio": S3_MINIO, "default": {**S3_MINIO, "bucket": "other"}}
    spec = resolve_storage(key(storage_key="minio"), configs)
    assert spec.type is StorageType.S3
    assert spec.bucket == "models"
    assert spec.endpoint_url == "http://minio:9000"
    assert spec.region == "us-south"
    assert (spec.access_key_id, spec.secret_access_key) == ("AKIAMINIO", "minio-secret")


def test_unknown_storage_key_names_the_key_and_the_known_keys() -> None:
    configs = {"zeta": S3_MINIO, "alpha": HTTP_SITE, "default": S3_MINIO}
    with pytest.raises(UnknownStorageKey) as caught:
        resolve_storage(key(storage_key="missing"), configs)
    message = str(caught.value)
    assert "'missing'" in message
    assert "alpha, default, zeta" in message


def test_unknown_storage_key_with_empty_config() -> None:
    with pytest.raises(UnknownStorageKey, match=r"'k'.*known keys: none"):
        resolve_storage(key(storage_key="k"), {})


def test_explicit_key_never_falls_back_to_default() -> None:
    with pytest.raises(UnknownStorageKey):
        resolve_storage(
            key(storage_key="nope", storage_params={"type": "s3"}), {"default": S3_MINIO}
        )


def test_typed_default_wins_over_default() -> None:
    configs = {"default_s3": S3_MINIO, "default": {**S3_MINIO, "bucket": "plain-default"}}
    spec = resolve_storage(key(storage_params={"type": "s3"}), configs)
    assert spec.bucket == "models"


def test_default_is_used_when_no_typed_default_exists() -> None:
    spec = resolve_storage(key(storage_params={"type": "s3"}), {"default": S3_MINIO})
    assert spec.access_key_id == "AKIAMINIO"


def test_default_is_used_when_params_give_no_type() -> None:
    spec = resolve_storage(key(storage_params={"bucket": "b2"}), {"default": S3_MINIO})
    assert spec.type is StorageType.S3
    assert spec.bucket == "b2"


def test_untyped_default_entry_is_used_with_typed_params() -> None:
    untyped = {k: v for k, v in S3_MINIO.items() if k != "type"}
    spec = resolve_storage(key(storage_params={"type": "s3"}), {"default": untyped})
    assert spec.endpoint_url == "http://minio:9000"


def test_default_of_another_type_is_skipped() -> None:
    """A default s3 entry must not lend its CA certificate to an http model."""
    configs = {"default": {**S3_MINIO, "certificate": "S3-CA-PEM"}}
    spec = resolve_storage(key(storage_params=HTTP_SITE), configs)
    assert spec.type is StorageType.HTTP
    assert spec.certificate is None


def test_params_alone_without_any_default() -> None:
    spec = resolve_storage(key(storage_params=PVC_CLAIM), {"minio": S3_MINIO})
    assert spec == StorageSpec(type=StorageType.PVC, name="claim-a")


def test_no_key_no_params_no_default_has_no_type() -> None:
    with pytest.raises(UnsupportedStorage, match="storage type not set"):
        resolve_storage(ModelKey(), {"minio": S3_MINIO})


# --- resolve_storage: overlay and fields ---------------------------------------------------------


def test_params_overlay_the_entry() -> None:
    params = {"bucket": "override", "endpoint_url": "https://other:443"}
    spec = resolve_storage(key(storage_key="minio", storage_params=params), {"minio": S3_MINIO})
    assert spec.bucket == "override"
    assert spec.endpoint_url == "https://other:443"
    assert spec.access_key_id == "AKIAMINIO"


def test_deprecated_top_level_bucket_overlays_the_entry() -> None:
    spec = resolve_storage(key(storage_key="minio", bucket="legacy"), {"minio": S3_MINIO})
    assert spec.bucket == "legacy"


def test_overlay_leaves_the_configs_untouched() -> None:
    configs = {"site": {**HTTP_SITE, "headers": {"X-A": "1"}}}
    before = json.dumps(configs, sort_keys=True)
    resolve_storage(
        key(storage_key="site", storage_params={"url": "https://x", "headers.X-B": "2"}), configs
    )
    assert json.dumps(configs, sort_keys=True) == before


def test_dotted_params_set_nested_fields() -> None:
    configs = {"site": {**HTTP_SITE, "headers": {"X-A": "1"}}}
    params = {"headers.Authorization": "Bearer t"}
    spec = resolve_storage(key(storage_key="site", storage_params=params), configs)
    assert dict(spec.headers) == {"X-A": "1", "Authorization": "Bearer t"}


def test_dotted_param_through_a_non_object_is_rejected() -> None:
    with pytest.raises(UnsupportedStorage, match="'url' is not an object"):
        resolve_storage(key(storage_params={**HTTP_SITE, "url.x": "y"}), {})


@pytest.mark.parametrize(
    ("entry", "bucket"),
    [
        ({"type": "s3", "default_bucket": "old"}, "old"),
        ({"type": "s3", "default_bucket": "old", "bucket": "new"}, "new"),
    ],
)
def test_default_bucket_is_an_alias_of_bucket(entry: dict[str, str], bucket: str) -> None:
    assert resolve_storage(key(storage_key="k"), {"k": entry}).bucket == bucket


def test_kserve_style_aws_names_are_accepted() -> None:
    entry = {
        "type": "s3",
        "bucket": "b",
        "AWS_ACCESS_KEY_ID": "AKIAX",
        "AWS_SECRET_ACCESS_KEY": "sx",
        "AWS_DEFAULT_REGION": "eu-de",
        "AWS_ENDPOINT_URL": "https://s3.eu-de.example.com",
    }
    spec = resolve_storage(key(storage_key="k"), {"k": entry})
    assert (spec.access_key_id, spec.secret_access_key) == ("AKIAX", "sx")
    assert spec.region == "eu-de"
    assert spec.endpoint_url == "https://s3.eu-de.example.com"


def test_canonical_name_wins_over_alias() -> None:
    entry = {**S3_MINIO, "AWS_ACCESS_KEY_ID": "AKIAOTHER", "AWS_SECRET_ACCESS_KEY": "o"}
    assert resolve_storage(key(storage_key="k"), {"k": entry}).access_key_id == "AKIAMINIO"


@pytest.mark.parametrize("kind", ["S3", " s3 "])
def test_type_is_case_and_space_insensitive(kind: str) -> None:
    spec = resolve_storage(key(storage_params={"type": kind, "bucket": "b"}), {})
    assert spec.type is StorageType.S3


@pytest.mark.parametrize("kind", ["ftp", "minio", ""])
def test_unsupported_type_is_named(kind: str) -> None:
    with pytest.raises(UnsupportedStorage) as caught:
        resolve_storage(key(storage_key="k"), {"k": {"type": kind, "bucket": "b"}})
    if kind:
        assert repr(kind) in str(caught.value)
        assert "s3, http, pvc, azure, gcs" in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"type": "s3"}, "'bucket'"),
        ({"type": "s3", "bucket": ""}, "'bucket'"),
        ({"type": "s3", "bucket": "b", "access_key_id": "a"}, "secret_access_key"),
        ({"type": "s3", "bucket": "b", "secret_access_key": "s"}, "access_key_id"),
        ({"type": "s3", "bucket": "b", "endpoint_url": "minio:9000"}, "endpoint_url"),
        ({"type": "s3", "bucket": "b", "region": 5}, "'region' must be a string"),
        ({"type": "s3", "bucket": ["b"]}, "'bucket' must be a string"),
        ({"type": "http"}, "'url'"),
        ({"type": "http", "url": "ftp://host/x"}, "http(s) URL"),
        ({"type": "http", "url": "https://"}, "http(s) URL"),
        ({"type": "http", "url": "https://h:99999/x"}, "http(s) URL"),
        ({"type": "http", "url": "https://[zz]/x"}, "http(s) URL"),
        ({"type": "http", "url": "https://h:port/x"}, "http(s) URL"),
        ({"type": "http", "url": "https://h", "client_key": "k"}, "client_certificate"),
        ({"type": "http", "url": "https://h", "headers": ["a"]}, "'headers' must be an object"),
        ({"type": "http", "url": "https://h", "headers": "{bad"}, "'headers' is not a JSON"),
        ({"type": "http", "url": "https://h", "headers": {"A": 1}}, "header 'A'"),
        ({"type": "azure", "connection_string": "c"}, "'container'"),
        ({"type": "azure", "container": "c"}, "'account_name' or 'connection_string'"),
        ({"type": "azure", "container": "c", "endpoint_url": "x"}, "endpoint_url"),
        (
            {"type": "azure", "container": "c", "client_id": "i", "client_secret": "s"},
            "service-principal",
        ),
        ({"type": "gcs"}, "'bucket'"),
        ({"type": "gcs", "bucket": "b", "private_key": "k"}, "client_email"),
        ({"type": "gcs", "bucket": "b", "token_uri": "oauth2"}, "token_uri"),
        ({"type": "pvc"}, "'name'"),
        ({"type": "pvc", "name": "a/b"}, "single path segment"),
        ({"type": "pvc", "name": ".."}, "single path segment"),
    ],
)
def test_bad_storage_fields_are_named(entry: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UnsupportedStorage) as caught:
        resolve_storage(key(storage_key="k"), {"k": entry})
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"A": "1"}, (("A", "1"),)),
        ({"A": ["1", "2"], "B": "3"}, (("A", "1"), ("A", "2"), ("B", "3"))),
        ('{"A": "1"}', (("A", "1"),)),
        ("", ()),
    ],
)
def test_http_headers_forms(headers: Any, expected: tuple[tuple[str, str], ...]) -> None:
    spec = resolve_storage(key(storage_params={**HTTP_SITE, "headers": headers}), {})
    assert spec.headers == expected


def test_http_spec_fields() -> None:
    entry = {
        **HTTP_SITE,
        "certificate": "CA",
        "client_certificate": "CERT",
        "client_key": "KEY",
    }
    spec = resolve_storage(key(storage_key="k"), {"k": entry})
    assert spec == StorageSpec(
        type=StorageType.HTTP,
        url="https://files.example.com/base",
        certificate="CA",
        client_certificate="CERT",
        client_key="KEY",
    )


def test_azure_spec_fields() -> None:
    entry = {"type": "azure", "account_name": "acct", "container": "models"}
    assert resolve_storage(key(storage_key="k"), {"k": entry}) == StorageSpec(
        type=StorageType.AZURE, account_name="acct", container="models"
    )
    with_secret = {**entry, "connection_string": "AccountKey=k"}
    spec = resolve_storage(key(storage_params={"container": "other"}), {"default": with_secret})
    assert (spec.container, spec.connection_string) == ("other", "AccountKey=k")
    assert "AccountKey" not in repr(spec)


def test_gcs_spec_fields() -> None:
    entry = {
        "type": "gcs",
        "bucket": "models",
        "private_key": "-----BEGIN PRIVATE KEY-----",
        "client_email": "sa@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    spec = resolve_storage(key(storage_key="k"), {"k": entry})
    assert (spec.type, spec.bucket, spec.client_email) == (
        StorageType.GCS,
        "models",
        "sa@p.iam.gserviceaccount.com",
    )
    assert spec.private_key == "-----BEGIN PRIVATE KEY-----"
    assert spec.token_uri == "https://oauth2.googleapis.com/token"
    assert "PRIVATE KEY" not in repr(spec)


def test_repr_hides_credentials() -> None:
    s3 = resolve_storage(key(storage_key="k"), {"k": {**S3_MINIO, "certificate": "CA-PEM"}})
    http = resolve_storage(
        key(storage_params={**HTTP_SITE, "headers": {"Authorization": "Bearer tok"}}), {}
    )
    for text in (repr(s3), repr(http)):
        for secret in ("AKIAMINIO", "minio-secret", "CA-PEM", "Bearer tok"):
            assert secret not in text
    assert "models" in repr(s3)


# --- plan_local_target -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "basename", "remote"),
    [
        ("models/m.bin", "m.bin", "models/m.bin"),
        ("/models/m.bin", "m.bin", "models/m.bin"),  # modelmesh-serving #97
        ("//models/m.bin", "m.bin", "models/m.bin"),
        ("m.bin", "m.bin", "m.bin"),
        ("models/dir/", "dir", "models/dir/"),
        ("a/./b", "b", "a/./b"),
        ("", "_model", ""),
        ("/", "_model", ""),
        ("///", "_model", ""),
        (".", "_model", "."),
        ("...", "...", "..."),
        ("a/..b", "..b", "a/..b"),
    ],
)
def test_model_files_go_below_the_model_dir(path: str, basename: str, remote: str) -> None:
    target = plan_local_target(ROOT, "mnist__isvc-0123456789", path)
    assert target.model_dir == PurePosixPath("/models/mnist__isvc-0123456789")
    assert target.local_path == target.model_dir / basename
    assert target.remote_path == remote
    assert target.local_path.parent == target.model_dir


@pytest.mark.parametrize(
    "path",
    ["..", "../x", "/../x", "a/../../x", "a/..", "a/b/../c", "models/../../etc/passwd"],
)
def test_dot_dot_in_the_path_is_rejected(path: str) -> None:
    with pytest.raises(InvalidModelRequest, match="path escapes the model root"):
        plan_local_target(ROOT, "m", path)


def test_nul_in_the_path_is_rejected() -> None:
    with pytest.raises(InvalidModelRequest, match="NUL"):
        plan_local_target(ROOT, "m", "a\0b")


@pytest.mark.parametrize("model_id", ["", ".", "..", "a/b", "../x", "/abs", "a\0b", "x/"])
def test_model_id_must_be_one_path_segment(model_id: str) -> None:
    with pytest.raises(InvalidModelRequest, match="path escapes the model root"):
        plan_local_target(ROOT, model_id, "m.bin")


# --- object_relative_path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "key_name", "expected"),
    [
        ("dir/", "dir/a.txt", "a.txt"),
        ("dir/", "dir/sub/b.txt", "sub/b.txt"),
        ("dir/", "dir//b.txt", "b.txt"),
        ("dir/", "dir/./a.txt", "a.txt"),
        ("", "x/y", "x/y"),
        ("dir/", "dir/...", "..."),
    ],
)
def test_objects_keep_their_relative_paths(prefix: str, key_name: str, expected: str) -> None:
    assert object_relative_path(prefix, key_name) == PurePosixPath(expected)


@pytest.mark.parametrize("key_name", ["dir/", "dir/sub/", "dir//"])
def test_folder_markers_are_skipped(key_name: str) -> None:
    assert object_relative_path("dir/", key_name) is None


@pytest.mark.parametrize("key_name", ["dir/../evil", "dir/a/../../x", "dir/..", "dir/a\0b"])
def test_object_keys_that_escape_are_rejected(key_name: str) -> None:
    with pytest.raises(InvalidModelRequest, match="escapes the model directory"):
        object_relative_path("dir/", key_name)


def test_object_outside_the_prefix_is_rejected() -> None:
    with pytest.raises(InvalidModelRequest, match="not under prefix"):
        object_relative_path("dir/", "other/a")


# --- misc ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host:8443/p/m.bin?sig=secret#frag", "https://host:8443/p/m.bin"),
        ("http://127.0.0.1/x", "http://127.0.0.1/x"),
        ("http://[::1]:9000/b", "http://[::1]:9000/b"),
        ("http://h?a=1", "http://h"),
        ("minio:9000?x", "minio:9000"),
        ("u:p@minio", "<hidden>"),
    ],
)
def test_redact_url_drops_credentials_and_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_spec_module_is_pure() -> None:
    source = Path(spec_module.__file__).read_text()
    assert source.startswith('"""Pure:')
    tree = ast.parse(source)
    banned = {"asyncio", "time", "random", "os", "socket", "urllib", "boto3", "aiohttp"}
    for node in ast.walk(tree):
        assert not isinstance(node, ast.AsyncFunctionDef | ast.Await)
        if isinstance(node, ast.Import):
            assert not {alias.name.split(".")[0] for alias in node.names} & banned
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in banned
            if node.module == "pathlib":
                assert {alias.name for alias in node.names} <= {"PurePosixPath"}
