"""The adapter process and hostile or secret-bearing input.

- A model id that would escape or break the model directory is refused with
  INVALID_ARGUMENT before anything touches the disk.
- Storage credentials never reach a log line or an error message: loads from storage
  entries whose secret values are unique markers (S3 keys, an endpoint password, an HTTP
  token in the URL and in a header, an Azure account key and SAS, a GCS private key), some
  failing and one succeeding into a real MLServer, leave no marker in the adapter's log or
  in any gRPC status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from mmesh.core.proto import model_runtime_pb2 as rt
from mmesh.core.proto import model_runtime_pb2_grpc as rt_grpc
from tests.fixtures.mlserver import MLServerProc
from tests.fixtures.models import TUTORIAL_BUCKET, TUTORIAL_MODEL_KEY
from tests.fixtures.procs import free_port
from tests.fixtures.runtimes import AdapterProc, runtime_status

StartAdapter = Callable[[dict[str, str]], AbstractContextManager[AdapterProc]]


def load(
    stub: rt_grpc.ModelRuntimeStub, model_id: str, key: dict[str, object], path: str = "m.joblib"
) -> rt.LoadModelResponse:
    request = rt.LoadModelRequest(
        modelId=model_id, modelType="sklearn", modelPath=path, modelKey=json.dumps(key)
    )
    response: rt.LoadModelResponse = stub.loadModel(request, timeout=60)
    return response


# --- model ids ---------------------------------------------------------------------------

BAD_IDS = [
    pytest.param("../outside", "must not contain '/'", id="escape"),
    pytest.param("a/b", "must not contain '/'", id="slash"),
    pytest.param("..", "must not be '.' or '..'", id="dot-dot"),
    pytest.param(".", "must not be '.' or '..'", id="dot"),
    pytest.param("nul\x00byte", "U+0000", id="nul"),
    pytest.param("tab\there", "U+0009", id="control"),
    pytest.param("x" * 256, "at most 255 bytes", id="too-long"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("_mlserver_models", "reserved", id="backend-repository"),
    pytest.param(".mmesh-models", "reserved", id="ownership-marker"),
]


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """`<sandbox>/models` is the model root; nothing else should appear in the sandbox."""
    (tmp_path / "sandbox" / "models").mkdir(parents=True)
    return tmp_path / "sandbox"


@pytest.fixture
def bare_adapter(
    start_adapter: StartAdapter, sandbox: Path, storage_config: Path
) -> Iterator[rt_grpc.ModelRuntimeStub]:
    """An adapter whose model server is down: id checks come before any server call."""
    env = {
        "RUNTIME_PORT": str(free_port()),
        "ROOT_MODEL_DIR": str(sandbox / "models"),
        "STORAGE_CONFIG_DIR": str(storage_config),
    }
    with start_adapter(env) as proc, grpc.insecure_channel(proc.target) as channel:
        yield rt_grpc.ModelRuntimeStub(channel)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("model_id", "rule"), BAD_IDS)
def test_bad_model_id_is_refused_and_nothing_is_created(
    bare_adapter: rt_grpc.ModelRuntimeStub, sandbox: Path, model_id: str, rule: str
) -> None:
    before = listing(sandbox)
    key = {"storage_key": "localMinIO"}
    with pytest.raises(grpc.RpcError) as err:
        load(bare_adapter, model_id, key, TUTORIAL_MODEL_KEY)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert rule in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        bare_adapter.unloadModel(rt.UnloadModelRequest(modelId=model_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert listing(sandbox) == before == ["models"]


# --- secrets -----------------------------------------------------------------------------

MARKERS = {
    "s3_key_id": "AKIDMARKER0a1b2c",
    "s3_secret": "S3SECRETMARKER3d4e5f",
    "endpoint_password": "ENDPOINTPWMARKER6a7b",
    "url_token": "URLTOKENMARKER8c9d0e",
    "url_password": "URLPWMARKER1f2a3b",
    "header_token": "HEADERTOKENMARKER4c5d",
    "param_token": "PARAMTOKENMARKER6e7f",
    "azure_key": "AZUREKEYMARKER8a9b",
    "azure_sas": "AZURESASMARKER0c1d",
    "gcs_key": "GCSKEYMARKER2e3f4a",
}


def secret_storage_config(directory: Path, s3_endpoint: str) -> None:
    """One storage-config entry per way of holding a secret; only `s3-good` can work."""
    closed = f"127.0.0.1:{free_port()}"
    s3_creds = {"access_key_id": MARKERS["s3_key_id"], "secret_access_key": MARKERS["s3_secret"]}
    azure_key = base64.b64encode(MARKERS["azure_key"].encode()).decode()
    entries: dict[str, dict[str, object]] = {
        "s3-good": {
            "type": "s3",
            "endpoint_url": s3_endpoint,
            "bucket": TUTORIAL_BUCKET,
            "region": "us-east-1",
            **s3_creds,
        },
        "s3-down": {"type": "s3", "endpoint_url": f"http://{closed}", "bucket": "b", **s3_creds},
        "s3-userinfo": {
            "type": "s3",
            "endpoint_url": f"http://minio:{MARKERS['endpoint_password']}@{closed}",
            "bucket": "b",
            **s3_creds,
        },
        "s3-bad-endpoint": {
            "type": "s3",
            "endpoint_url": f"http://{closed}:x?X-Amz-Signature={MARKERS['url_token']}",
            "bucket": "b",
            **s3_creds,
        },
        "http-down": {
            "type": "http",
            "url": f"http://user:{MARKERS['url_password']}@{closed}/m?token={MARKERS['url_token']}",
        },
        "http-header": {
            "type": "http",
            "url": f"http://{closed}/m?token={MARKERS['url_token']}",
            "headers": {"Authorization": f"Bearer {MARKERS['header_token']}"},
        },
        "http-both": {
            "type": "http",
            "url": f"http://user:{MARKERS['url_password']}@{closed}/m",
            "headers": {"Authorization": f"Bearer {MARKERS['header_token']}"},
        },
        "azure-key": {
            "type": "azure",
            "container": "models",
            "connection_string": (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={azure_key};BlobEndpoint=http://{closed}/devstoreaccount1;"
            ),
        },
        "azure-sas": {
            "type": "azure",
            "container": "models",
            "connection_string": (
                f"BlobEndpoint=http://{closed}/devstoreaccount1;"
                f"SharedAccessSignature=sv=2020-02-10&ss=b&sig={MARKERS['azure_sas']}"
            ),
        },
        "gcs-bad-key": {
            "type": "gcs",
            "bucket": "models",
            "client_email": "loader@example.iam.gserviceaccount.com",
            "private_key": (
                f"-----BEGIN PRIVATE KEY-----\n{MARKERS['gcs_key']}\n-----END PRIVATE KEY-----\n"
            ),
        },
    }
    for name, entry in entries.items():
        (directory / name).write_text(json.dumps(entry))


FAILING_LOADS = [
    pytest.param("s3-down", {}, grpc.StatusCode.UNAVAILABLE, id="s3-unreachable"),
    pytest.param("s3-userinfo", {}, None, id="s3-endpoint-with-password"),
    pytest.param("s3-bad-endpoint", {}, grpc.StatusCode.INVALID_ARGUMENT, id="s3-bad-endpoint"),
    pytest.param("http-down", {}, grpc.StatusCode.UNAVAILABLE, id="http-url-credentials"),
    pytest.param("http-header", {}, grpc.StatusCode.UNAVAILABLE, id="http-bearer-header"),
    pytest.param("http-both", {}, grpc.StatusCode.INVALID_ARGUMENT, id="http-two-credentials"),
    pytest.param(
        "http-header",
        {"headers.X-Api-Key": MARKERS["param_token"]},
        grpc.StatusCode.UNAVAILABLE,
        id="http-secret-in-model-params",
    ),
    pytest.param("azure-key", {}, grpc.StatusCode.UNAVAILABLE, id="azure-account-key"),
    pytest.param("azure-sas", {}, grpc.StatusCode.UNAVAILABLE, id="azure-sas"),
    pytest.param("gcs-bad-key", {}, grpc.StatusCode.INVALID_ARGUMENT, id="gcs-private-key"),
]


@pytest.fixture
def secret_adapter(
    start_adapter: StartAdapter, mlserver: MLServerProc, tutorial_bucket: str, tmp_path: Path
) -> Iterator[AdapterProc]:
    config_dir = tmp_path / "storage-config"
    config_dir.mkdir()
    secret_storage_config(config_dir, tutorial_bucket)
    env = {
        "RUNTIME_PORT": str(mlserver.grpc_port),
        "ROOT_MODEL_DIR": str(mlserver.models_root),
        "STORAGE_CONFIG_DIR": str(config_dir),
        "LOG_LEVEL": "DEBUG",
    }
    with start_adapter(env) as proc:
        assert runtime_status(proc.target).status == rt.RuntimeStatusResponse.READY
        yield proc


def assert_no_marker(text: str, where: str) -> None:
    leaked = [name for name, marker in MARKERS.items() if marker in text]
    assert not leaked, f"{where} shows {leaked}:\n{text}"


def test_storage_secrets_reach_neither_errors_nor_logs(
    secret_adapter: AdapterProc, mlserver: MLServerProc
) -> None:
    with grpc.insecure_channel(secret_adapter.target) as channel:
        stub = rt_grpc.ModelRuntimeStub(channel)
        for param in FAILING_LOADS:
            storage_key, params, code = param.values
            key = {"storage_key": storage_key, "storage_params": params}
            model_id = f"secret-{param.id}"
            with pytest.raises(grpc.RpcError) as err:
                load(stub, model_id, key)
            details = err.value.details() or ""
            if code is not None:
                assert err.value.code() == code, f"{param.id}: {details}"
            assert_no_marker(details, f"the status of {param.id}")
            assert not (mlserver.models_root / model_id).exists()

        good = load(stub, "secret-s3-good", {"storage_key": "s3-good"}, TUTORIAL_MODEL_KEY)
        assert good.sizeInBytes > 0
        stub.unloadModel(rt.UnloadModelRequest(modelId="secret-s3-good"), timeout=30)

    log = secret_adapter.log.read_text()
    assert "loaded model secret-s3-good" in log and "loadModel failed" in log
    assert_no_marker(log, "the adapter log")
