"""The runtime Deployment: golden mlserver-1.x, the env contract with router and adapter,
each pipeline step, validation, and scale-to-zero."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from mmesh.adapter.settings import AdapterSettings
from mmesh.operator.deployment import render_deployment
from mmesh.operator.errors import InvalidRuntime
from mmesh.operator.pod_parts import NamespaceFacts
from mmesh.operator.quantities import format_bytes, parse_quantity
from mmesh.operator.resources import ServingRuntime
from mmesh.operator.scaling import ScaleDecision, scale_decision
from mmesh.operator.serving_config import ServingConfig, merge_config
from mmesh.router.settings import RouterSettings
from tests.unit.operator.conftest import (
    DEFAULTS_YAML,
    NAMESPACE,
    check_golden,
    make_runtime_body,
    runtime_body,
)

FACTS = NamespaceFacts(NAMESPACE)
POD_NAME = "modelmesh-serving-mlserver-1.x-7db675f677-twrwd"


def mlserver() -> ServingRuntime:
    return ServingRuntime.from_body(runtime_body("mlserver-1.x"))


def render(
    rt: ServingRuntime | None = None,
    config: ServingConfig | None = None,
    facts: NamespaceFacts = FACTS,
    replicas: int = 2,
) -> dict[str, Any]:
    config = config or merge_config(DEFAULTS_YAML, None)
    return render_deployment(rt or mlserver(), config, facts, replicas=replicas)


def with_config(user: str) -> ServingConfig:
    return merge_config(DEFAULTS_YAML, user)


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def volumes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def custom_runtime(**spec: Any) -> ServingRuntime:
    formats = [{"name": "custom", "autoSelect": True}]
    return ServingRuntime.from_body(make_runtime_body("custom-1.x", formats=formats, **spec))


# ---------------------------------------------------------------- golden files


def test_mlserver_deployment_golden() -> None:
    check_golden("deployment_mlserver-1.x.yaml", render())


def test_rendering_is_deterministic_and_leaves_the_runtime_alone() -> None:
    rt = mlserver()
    before = [dict(c) for c in rt.containers]
    assert render(rt) == render(rt)
    assert [dict(c) for c in rt.containers] == before


# ---------------------------------------------------------------- shape


def test_containers_runtime_then_adapter_then_mm_last() -> None:
    names = [c["name"] for c in render()["spec"]["template"]["spec"]["containers"]]
    assert names == ["mlserver", "mlserver-adapter", "mm"]


def test_deployment_metadata_and_strategy() -> None:
    deployment = render(replicas=3)
    assert deployment["metadata"]["name"] == "modelmesh-serving-mlserver-1.x"
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ClusterServingRuntime"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-mlserver-1.x"
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "75%", "maxUnavailable": "15%"}
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    selector = spec["selector"]["matchLabels"]
    assert selector == {
        "modelmesh-service": "modelmesh-serving",
        "name": deployment["metadata"]["name"],
    }
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()


def test_runtime_container_shares_models_dir_and_waits_for_mm() -> None:
    container = containers(render())["mlserver"]
    assert mounts(container) == {"models-dir": "/models"}
    assert container["lifecycle"]["preStop"]["httpGet"] == {
        "path": "/prestop",
        "port": 8090,
        "scheme": "HTTP",
    }
    assert container["securityContext"] == {
        "capabilities": {"drop": ["ALL"]},
        "allowPrivilegeEscalation": False,
    }
    assert volumes(render())["models-dir"] == {
        "name": "models-dir",
        "emptyDir": {"sizeLimit": "1536Mi"},
    }


def test_mm_probes_ports_and_image() -> None:
    mm = containers(render())["mm"]
    assert mm["image"] == "mmesh-router:latest"
    assert mm["command"] == ["python", "-m", "mmesh.router"]
    assert [(p["name"], p["containerPort"]) for p in mm["ports"]] == [
        ("grpc", 8033),
        ("http", 8008),
        ("prometheus", 2112),
    ]
    assert mm["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert mm["livenessProbe"]["httpGet"] == {"path": "/live", "port": 8089, "scheme": "HTTP"}
    assert mm["livenessProbe"]["initialDelaySeconds"] == 90
    assert mounts(mm) == {"etcd-config": "/opt/kserve/mmesh/etcd"}
    assert volumes(render())["etcd-config"]["secret"]["secretName"] == "model-serving-etcd"


def test_etcd_secret_name_comes_from_the_namespace_facts() -> None:
    deployment = render(facts=NamespaceFacts(NAMESPACE, etcd_secret_name="mm-etcd"))
    assert volumes(deployment)["etcd-config"]["secret"]["secretName"] == "mm-etcd"


# ---------------------------------------------------------------- the env contract


ROUTER_ENV_NOT_READ = {"MM_KVSTORE_PREFIX", "MM_TLS_KEY_CERT_PATH"}
ADAPTER_ENV_NOT_READ = {"RUNTIME_DATA_ENDPOINT", "USE_EMBEDDED_PULLER"}
FIELD_VALUES = {
    "metadata.name": POD_NAME,
    "status.podIP": "10.1.2.3",
    "status.hostIP": "10.0.0.7",
    "spec.nodeName": "node-7",
}


def resolved_env(container: dict[str, Any], deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would fill it in."""
    env = {}
    for entry in container["env"]:
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in source:
            env[entry["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        else:
            ref = source["resourceFieldRef"]
            target = containers(deployment)[ref["containerName"]]
            env[entry["name"]] = str(parse_quantity(target["resources"]["requests"]["memory"]))
    return env


def aliases(settings: type[BaseModel]) -> set[str]:
    return {f.alias for f in settings.model_fields.values() if f.alias}


def test_mm_env_configures_the_router() -> None:
    deployment = render()
    env = resolved_env(containers(deployment)["mm"], deployment)
    assert set(env) - aliases(RouterSettings) <= ROUTER_ENV_NOT_READ
    settings = RouterSettings.model_validate(env)
    assert settings.service_name == "modelmesh-serving"
    assert settings.grpc_port == 8033
    assert settings.rest_port == 8008
    assert settings.probe_port == 8089
    assert settings.metrics_port == 2112
    assert settings.runtime_port == 8085
    assert settings.serving_port == 8001
    assert settings.host == "0.0.0.0"
    assert settings.pod_ip == "10.1.2.3"
    assert settings.location == "10.0.0.7"
    assert settings.node_name == "node-7"  # the router reads this Node's zone label
    assert settings.resolved_instance_id == POD_NAME[-12:]
    assert settings.kv_store == "etcd:/opt/kserve/mmesh/etcd/etcd_connection"
    assert settings.shutdown_timeout_ms == 90_000
    assert settings.default_vmodel_owner == "ksp"
    assert settings.label_list == (
        "mt:lightgbm",
        "mt:lightgbm:3",
        "mt:sklearn",
        "mt:sklearn:0",
        "mt:xgboost",
        "mt:xgboost:1",
        "pv:grpc-v2",
        "pv:v2",
        "rt:mlserver-1.x",
    )


def test_adapter_env_configures_the_adapter() -> None:
    deployment = render()
    adapter = containers(deployment)["mlserver-adapter"]
    env = resolved_env(adapter, deployment)
    assert set(env) - aliases(AdapterSettings) <= ADAPTER_ENV_NOT_READ
    settings = AdapterSettings.model_validate(env)
    assert settings.server_type == "mlserver"
    assert settings.port == 8085
    assert settings.runtime_port == 8001
    assert settings.container_mem_req_bytes == 2**30
    assert settings.mem_buffer_bytes == 134217728
    assert settings.load_timeout_ms == 90_000
    assert str(settings.root_model_dir) == "/models"
    assert str(settings.storage_config_dir) == "/storage-config"
    assert settings.runtime_version == "1.7.1"
    assert adapter["command"] == ["python", "-m", "mmesh.adapter"]
    assert mounts(adapter) == {
        "models-dir": "/models",
        "storage-config": "/storage-config",
        "tmp": "/tmp",
    }
    assert adapter["securityContext"]["readOnlyRootFilesystem"] is True
    assert adapter["securityContext"]["runAsNonRoot"] is True
    assert volumes(deployment)["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes(deployment)["storage-config"]["secret"]["secretName"] == "storage-config"


def test_adapter_memory_comes_from_the_downward_api() -> None:
    env = env_of(containers(render())["mlserver-adapter"])
    assert env["CONTAINER_MEM_REQ_BYTES"] == {
        "resourceFieldRef": {"containerName": "mlserver", "resource": "requests.memory"}
    }


def test_runtime_annotations_and_adapter_env_reach_the_adapter() -> None:
    body = runtime_body("triton-2.x")
    body["metadata"]["annotations"]["perModelConcurrencyLimit"] = "4"
    body["spec"]["builtInAdapter"]["env"] = [{"name": "LOADING_CONCURRENCY", "value": "3"}]
    env = env_of(containers(render(ServingRuntime.from_body(body)))["triton-adapter"])
    assert env["LOADING_CONCURRENCY"] == "3"  # the spec's adapter env wins over the annotation
    assert env["LIMIT_PER_MODEL_CONCURRENCY"] == "4"
    assert env["ADAPTER_SERVER_TYPE"] == "triton"


def test_triton_annotation_sets_loading_concurrency() -> None:
    triton = ServingRuntime.from_body(runtime_body("triton-2.x"))
    assert env_of(containers(render(triton))["triton-adapter"])["LOADING_CONCURRENCY"] == "2"


def test_bad_concurrency_annotation() -> None:
    body = runtime_body("mlserver-1.x")
    body["metadata"]["annotations"] = {"maxLoadingConcurrency": "lots"}
    with pytest.raises(InvalidRuntime, match="maxLoadingConcurrency"):
        render(ServingRuntime.from_body(body))


# ---------------------------------------------------------------- config switches


def test_metrics_and_rest_off() -> None:
    deployment = render(
        config=with_config("metrics: {enabled: false}\nrestProxy: {enabled: false}")
    )
    mm = containers(deployment)["mm"]
    env = env_of(mm)
    assert env["MM_METRICS"] == "disabled"
    assert env["REST_PROXY_LISTEN_PORT"] == "0"
    assert "pv:v2" not in env["MM_LABELS"].split(",")
    assert [p["name"] for p in mm["ports"]] == ["grpc"]
    assert not deployment["spec"]["template"]["metadata"]["annotations"]


def test_tls_env_and_mounts() -> None:
    config = with_config("tls: {secretName: mm-tls, clientAuth: optional}")
    deployment = render(config=config, facts=NamespaceFacts(NAMESPACE, tls_has_ca=True))
    mm = containers(deployment)["mm"]
    env = env_of(mm)
    assert env["MM_TLS_KEY_CERT_PATH"] == "/opt/kserve/mmesh/tls/tls.crt"
    assert env["MM_TLS_PRIVATE_KEY_PATH"] == "/opt/kserve/mmesh/tls/tls.key"
    assert env["MM_TLS_CLIENT_AUTH"] == "OPTIONAL"
    assert env["MM_TLS_TRUST_CERT_PATH"] == (
        "/opt/kserve/mmesh/tls/tls.crt,/opt/kserve/mmesh/tls/ca.crt"
    )
    assert mounts(mm)["tls-certs"] == "/opt/kserve/mmesh/tls"
    assert volumes(deployment)["tls-certs"]["secret"]["secretName"] == "mm-tls"


def test_access_logging_payload_processors_and_internal_env() -> None:
    config = with_config(
        "enableAccessLogging: true\n"
        "payloadProcessors: ['logger://*', 'http://sink:80/p']\n"
        "internalModelMeshEnvVars: [{name: MM_LOG_EACH_INVOKE, value: 'false'}, "
        "{name: MM_ZONE, value: z1}]\n"
        "grpcMaxMessageSizeBytes: 1000\n"
    )
    env = env_of(containers(render(config=config))["mm"])
    assert env["MM_PAYLOAD_PROCESSORS"] == "logger://* http://sink:80/p"
    assert env["MM_LOG_EACH_INVOKE"] == "false"  # internal vars override
    assert env["MM_ZONE"] == "z1"
    assert env["MM_SVC_GRPC_MAX_MSG_SIZE"] == "1000"


def test_pod_labels_and_annotations_precedence() -> None:
    body = runtime_body("mlserver-1.x")
    body["spec"]["labels"] = {"team": "runtime", "name": "hijack"}
    body["spec"]["annotations"] = {"a": "runtime"}
    config = with_config(
        "runtimePodLabels: {team: config, tier: gold}\n"
        "runtimePodAnnotations: {a: config, prometheus.io/scheme: https}"
    )
    metadata = render(ServingRuntime.from_body(body), config)["spec"]["template"]["metadata"]
    assert metadata["labels"]["team"] == "runtime"
    assert metadata["labels"]["tier"] == "gold"
    assert metadata["labels"]["name"] == "modelmesh-serving-mlserver-1.x"  # selector wins
    assert metadata["annotations"]["a"] == "runtime"
    assert metadata["annotations"]["prometheus.io/scheme"] == "https"


def test_pod_spec_pass_through() -> None:
    body = runtime_body("mlserver-1.x")
    body["spec"] |= {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
        "imagePullSecrets": [{"name": "b"}, {"name": "a"}],
        "volumes": [{"name": "extra", "emptyDir": {}}],
    }
    config = with_config("imagePullSecrets: [{name: a}]\nserviceAccountName: modelmesh")
    spec = render(ServingRuntime.from_body(body), config)["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]
    assert spec["serviceAccountName"] == "modelmesh"
    assert spec["volumes"][-1] == {"name": "extra", "emptyDir": {}}


def test_pvcs_are_mounted_read_only_in_sorted_order() -> None:
    deployment = render(facts=NamespaceFacts(NAMESPACE, pvc_names=("zeta", "alpha", "zeta")))
    vols = volumes(deployment)
    assert vols["pvc-0"]["persistentVolumeClaim"] == {"claimName": "alpha", "readOnly": True}
    assert vols["pvc-1"]["persistentVolumeClaim"] == {"claimName": "zeta", "readOnly": True}
    for name in ("mlserver", "mlserver-adapter"):
        assert mounts(containers(deployment)[name])["pvc-0"] == "/pvc_mounts/alpha"


# ---------------------------------------------------------------- custom runtimes


def test_custom_runtime_with_storage_helper_gets_a_puller() -> None:
    deployment = render(custom_runtime(grpcDataEndpoint="port:9000", grpcEndpoint="port:9001"))
    cs = containers(deployment)
    assert list(cs) == ["server", "puller", "mm"]
    assert env_of(cs["puller"])["MODEL_SERVER_ENDPOINT"] == "port:9001"
    mm_env = env_of(cs["mm"])
    assert mm_env["INTERNAL_GRPC_PORT"] == "8086"
    assert mm_env["INTERNAL_SERVING_GRPC_PORT"] == "9000"
    assert "storage-config" in volumes(deployment)


def test_custom_runtime_without_storage_helper_talks_to_the_runtime() -> None:
    rt = custom_runtime(grpcEndpoint="port:9001", storageHelper={"disabled": True})
    deployment = render(rt)
    assert list(containers(deployment)) == ["server", "mm"]
    assert env_of(containers(deployment)["mm"])["INTERNAL_GRPC_PORT"] == "9001"
    assert "storage-config" not in volumes(deployment)


def test_unix_socket_endpoints() -> None:
    rt = custom_runtime(
        grpcEndpoint="unix:/tmp/mmesh/grpc.sock",
        grpcDataEndpoint="unix:/tmp/mmesh/data.sock",
        storageHelper={"disabled": True},
    )
    deployment = render(rt)
    mm = containers(deployment)["mm"]
    env = env_of(mm)
    assert env["INTERNAL_GRPC_SOCKET_PATH"] == "/tmp/mmesh/grpc.sock"
    assert env["INTERNAL_SERVING_GRPC_SOCKET_PATH"] == "/tmp/mmesh/data.sock"
    assert "INTERNAL_GRPC_PORT" not in env
    assert mounts(mm)["domain-socket"] == "/tmp/mmesh"
    assert mounts(containers(deployment)["server"])["domain-socket"] == "/tmp/mmesh"
    assert volumes(deployment)["domain-socket"] == {"name": "domain-socket", "emptyDir": {}}


def test_built_in_runtime_without_data_endpoint_serves_from_the_management_port() -> None:
    body = runtime_body("mlserver-1.x")
    del body["spec"]["grpcDataEndpoint"]
    env = env_of(containers(render(ServingRuntime.from_body(body)))["mm"])
    assert env["INTERNAL_GRPC_PORT"] == "8085"
    assert env["INTERNAL_SERVING_GRPC_PORT"] == "8001"


def test_models_dir_unsized_without_memory_limits() -> None:
    assert volumes(render(custom_runtime()))["models-dir"]["emptyDir"] == {}


# ---------------------------------------------------------------- validation


def bad_runtime(**spec: Any) -> ServingRuntime:
    body = runtime_body("mlserver-1.x")
    body["spec"] |= spec
    return ServingRuntime.from_body(body)


INVALID = {
    "disabled": bad_runtime(disabled=True),
    "not multiModel": bad_runtime(multiModel=False),
    "container named mm": bad_runtime(containers=[{"name": "mm", "image": "x"}]),
    "container named mm-x": bad_runtime(containers=[{"name": "mm-x", "image": "x"}]),
    "reserved port": bad_runtime(
        containers=[{"name": "mlserver", "ports": [{"containerPort": 8089}]}]
    ),
    "reserved port name": bad_runtime(
        containers=[{"name": "mlserver", "ports": [{"containerPort": 1, "name": "grpc"}]}]
    ),
    "unknown server type": bad_runtime(builtInAdapter={"serverType": "nope"}),
    "server type without its container": bad_runtime(containers=[{"name": "other"}]),
    "adapter on a unix endpoint": bad_runtime(grpcEndpoint="unix:/tmp/x.sock"),
    "duplicate container names": bad_runtime(
        containers=[{"name": "mlserver"}, {"name": "mlserver"}]
    ),
    "container named like the adapter": bad_runtime(
        containers=[{"name": "mlserver"}, {"name": "mlserver-adapter"}]
    ),
    "reserved volume name": bad_runtime(volumes=[{"name": "models-dir", "emptyDir": {}}]),
    "sockets in two dirs": custom_runtime(
        grpcEndpoint="unix:/a/s.sock", grpcDataEndpoint="unix:/b/s.sock"
    ),
}


@pytest.mark.parametrize("rt", INVALID.values(), ids=INVALID.keys())
def test_invalid_runtimes(rt: ServingRuntime) -> None:
    with pytest.raises(InvalidRuntime):
        render(rt)


# ---------------------------------------------------------------- helpers and scaling


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("1Gi", 2**30),
        ("448Mi", 448 * 2**20),
        ("512M", 512 * 10**6),
        ("1e3", 1000),
        ("1500m", 2),
        ("0.5Gi", 2**29),
        ("12", 12),
        ("lots", None),
        ("1Qi", None),
    ],
)
def test_parse_quantity(raw: str, size: int | None) -> None:
    assert parse_quantity(raw) == size


@pytest.mark.parametrize(
    ("size", "text"), [(2**31, "2Gi"), (1536 * 2**20, "1536Mi"), (1000, "1000")]
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def scale(rt: ServingRuntime | None = None, **kwargs: Any) -> ScaleDecision:
    args = {
        "has_models": False,
        "no_models_since": None,
        "now": 1000.0,
        "grace_s": 60.0,
        "pods_per_runtime": 2,
    } | kwargs
    return scale_decision(rt or mlserver(), **args)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"has_models": True}, ScaleDecision(2)),
        ({"has_models": True, "pods_per_runtime": 5}, ScaleDecision(5)),
        ({}, ScaleDecision(0)),  # never seen with models: zero at once
        ({"no_models_since": 990.0}, ScaleDecision(2, recheck_after_s=50.0)),
        ({"no_models_since": 940.0}, ScaleDecision(0)),
        ({"no_models_since": 900.0}, ScaleDecision(0)),
        ({"scale_to_zero": False}, ScaleDecision(2)),
        ({"no_models_since": 990.0, "grace_s": 0.0}, ScaleDecision(0)),
    ],
)
def test_scale_decision(kwargs: dict[str, Any], expected: ScaleDecision) -> None:
    assert scale(**kwargs) == expected


def test_spec_replicas_override_pods_per_runtime() -> None:
    rt = bad_runtime(replicas=4)
    assert scale(rt, has_models=True) == ScaleDecision(4)
    assert scale(rt) == ScaleDecision(0)
    assert render(rt, replicas=scale(rt, has_models=True).replicas)["spec"]["replicas"] == 4
