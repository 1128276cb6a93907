"""A rendered runtime pod becomes local processes: env, addresses, mounts, images, commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmesh.local.podspec import (
    PodIdentity,
    PodSources,
    PodSpecError,
    claim_folder,
    container_env,
    expand_refs,
    match_image,
    parent_links,
    parse_quantity,
    plan_container,
    rewrite_paths,
    template_hash,
)

GOLDEN = Path(__file__).resolve().parents[1] / "operator" / "golden"
POD = PodIdentity("rt-abc-x1", "modelmesh-serving", "127.9.9.2", labels={"app": "rt"})
VOLUMES = {
    "models-dir": "/w/pod/volumes/models-dir",
    "storage-config": "/w/pod/volumes/storage-config",
    "etcd-config": "/w/pod/volumes/etcd-config",
    "tmp": "/w/pod/volumes/tmp",
}


def _rendered_pod() -> dict[str, Any]:
    doc = yaml.safe_load((GOLDEN / "deployment_mlserver-1.x.yaml").read_text())
    return dict(doc["spec"]["template"]["spec"])


def _container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == name)


def _plan(name: str) -> Any:
    spec = _rendered_pod()
    return plan_container(
        POD, spec, _container(spec, name), PodSources(), VOLUMES, "/venv/bin", "/usr/bin"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("1Gi", 2**30), ("448Mi", 448 * 2**20), ("500m", 0.5), ("2", 2), ("1e3", 1000), ("5k", 5000)],
)
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == value


def test_a_bad_quantity_names_itself() -> None:
    with pytest.raises(PodSpecError, match="invalid quantity '12 apples'"):
        parse_quantity("12 apples")


def test_router_gets_its_pod_address_name_and_mounted_etcd_file() -> None:
    plan = _plan("mm")
    assert plan.argv == ("python", "-m", "mmesh.router")
    assert plan.env["WKUBE_POD_NAME"] == "rt-abc-x1"
    assert plan.env["WKUBE_POD_IPADDR"] == "127.9.9.2"
    assert plan.env["MM_BIND_HOST"] == "127.9.9.2"  # 0.0.0.0 in the pod is its own address
    assert plan.env["INTERNAL_HOST"] == "127.9.9.2"  # the adapter is "localhost" in the pod
    assert plan.env["KV_STORE"] == "etcd:/w/pod/volumes/etcd-config/etcd_connection"
    assert plan.env["PATH"] == "/venv/bin:/usr/bin"


def test_adapter_reads_the_model_server_memory_request_and_local_folders() -> None:
    plan = _plan("mlserver-adapter")
    assert plan.env["CONTAINER_MEM_REQ_BYTES"] == str(2**30)
    assert plan.env["ROOT_MODEL_DIR"] == "/w/pod/volumes/models-dir"
    assert plan.env["STORAGE_CONFIG_DIR"] == "/w/pod/volumes/storage-config"
    assert plan.env["RUNTIME_HOST"] == "127.9.9.2"
    assert plan.env["PVC_MOUNTS_DIR"] == "/pvc_mounts"  # not a mount of this container


def test_model_server_binds_the_pod_address_and_uses_the_shared_models_folder() -> None:
    plan = _plan("mlserver")
    assert plan.env["MLSERVER_HOST"] == "127.9.9.2"
    assert plan.env["MLSERVER_MODELS_DIR"] == "/w/pod/volumes/models-dir/_mlserver_models/"
    assert plan.argv[:2] == ("/bin/sh", "-c")


def test_mount_paths_are_rewritten_only_where_a_path_starts() -> None:
    mounts = [("/models", "/local/m")]
    assert rewrite_paths("/models/a", mounts) == "/local/m/a"
    assert rewrite_paths("etcd:/models", mounts) == "etcd:/local/m"
    assert rewrite_paths("--dir=/models/x", mounts) == "--dir=/local/m/x"
    assert rewrite_paths("/models/a.crt,/models/b.crt", mounts) == "/local/m/a.crt,/local/m/b.crt"
    assert rewrite_paths("/models-extra/a", mounts) == "/models-extra/a"
    nested = [("/storage-config", "/tmp/pod/sc"), ("/tmp", "/tmp/pod/tmp")]
    assert rewrite_paths("/storage-config", nested) == "/tmp/pod/sc"  # not rewritten twice
    assert rewrite_paths("/data/models/a", mounts) == "/data/models/a"


def test_env_refs_secrets_and_config_maps_resolve_in_order() -> None:
    container = {
        "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two-$(MISSING)"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {
                "name": "O",
                "valueFrom": {"secretKeyRef": {"name": "x", "key": "k", "optional": True}},
            },
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ]
    }
    sources = PodSources(secrets={"s": {"k": "secret"}}, config_maps={"c": {"k": "conf"}})
    env = container_env(POD, {"containers": [container]}, container, sources)
    assert env == {
        "A": "one",
        "B": "one-two-$(MISSING)",
        "S": "secret",
        "C": "conf",
        "NS": "modelmesh-serving",
        "L": "rt",
    }


def test_a_missing_secret_key_is_a_config_error_naming_it() -> None:
    container = {"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(PodSpecError, match="secret 's' has no key 'k'") as caught:
        container_env(POD, {"containers": [container]}, container, PodSources())
    assert caught.value.reason == "CreateContainerConfigError"


def test_a_container_without_a_command_cannot_run_locally() -> None:
    container = {"name": "triton", "image": "nvcr.io/nvidia/tritonserver:23.04-py3"}
    with pytest.raises(PodSpecError, match="names no command"):
        plan_container(POD, {"containers": [container]}, container, PodSources(), {}, "/b", "/u")


def test_images_match_by_repository_name() -> None:
    images = {"mmesh-router": "/venv/bin", "mlserver": "/mls/bin"}
    assert match_image("mmesh-router:latest", images) == "/venv/bin"
    assert match_image("quay.io/org/mmesh-router@sha256:ab", images) == "/venv/bin"
    assert match_image("seldonio/mlserver:1.7.1", images) == "/mls/bin"
    assert match_image("nvcr.io/nvidia/tritonserver:23.04-py3", images) is None


def test_template_hash_is_stable_and_changes_with_the_template() -> None:
    spec = _rendered_pod()
    assert template_hash({"spec": spec}) == template_hash({"spec": _rendered_pod()})
    spec["containers"][0]["image"] = "other"
    assert template_hash({"spec": spec}) != template_hash({"spec": _rendered_pod()})
    assert len(template_hash({})) == 10


def test_expand_refs_leaves_unknown_references() -> None:
    assert expand_refs("$(A)/$(B)", {"A": "x"}) == "x/$(B)"


def test_a_claim_is_a_cluster_folder_per_namespace() -> None:
    assert claim_folder("/w", "team-a", "models") == "/w/pvcs/team-a/models"


def test_the_parent_of_claim_mounts_becomes_a_folder_of_links() -> None:
    mounts = [
        ("/pvc_mounts/b", "/w/pvcs/ns/b"),
        ("/pvc_mounts/a", "/w/pvcs/ns/a"),
        ("/models", "/w/pod/volumes/models-dir"),
        ("/tmp", "/w/pod/volumes/tmp"),
        ("/tmp/sock/s", "/w/pod/volumes/s"),
    ]
    linked = {"/pvc_mounts/a", "/pvc_mounts/b", "/models", "/tmp/sock/s"}
    # /models sits in `/`, and /tmp/sock lies under the /tmp mount: neither gets links
    assert parent_links(mounts, linked) == {
        "/pvc_mounts": {"a": "/w/pvcs/ns/a", "b": "/w/pvcs/ns/b"}
    }


def test_the_adapter_finds_claims_under_its_pvc_mounts_dir() -> None:
    spec = _rendered_pod()
    adapter = _container(spec, "mlserver-adapter")
    adapter["volumeMounts"].append({"name": "pvc-0", "mountPath": "/pvc_mounts/models"})
    volumes = {**VOLUMES, "pvc-0": "/w/pvcs/modelmesh-serving/models"}
    extra = [("/pvc_mounts", "/w/pod/mounts/mlserver-adapter/pvc_mounts")]
    sources = PodSources(secrets={"model-serving-etcd": {"etcd_connection": "{}"}})
    plan = plan_container(POD, spec, adapter, sources, volumes, "/venv/bin", "/usr/bin", extra)
    assert plan.env["PVC_MOUNTS_DIR"] == "/w/pod/mounts/mlserver-adapter/pvc_mounts"
