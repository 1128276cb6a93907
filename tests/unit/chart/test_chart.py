"""charts/mmesh: lint, schema-valid manifests, and that what it renders matches what the
operator, router and adapter read (settings, CRDs, runtimes, config, storage, ports)."""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev pins
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from mmesh.adapter.storage.spec import ModelKey, StorageType, resolve_storage
from mmesh.core.etcd_config import EtcdConnection
from mmesh.operator.serving_config import merge_config
from mmesh.operator.settings import CONFIG_MAP_KEY, CONFIG_MAP_NAME, OperatorSettings
from tests.unit.chart.conftest import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    Manifest,
    RenderError,
    helm,
    of_kind,
    one,
    render,
)

KUBE_VERSION = "1.32.0"
DEFAULTS_YAML = (ROOT / "mmesh" / "operator" / "config_defaults.yaml").read_text()
GOLDEN_RUNTIME = ROOT / "tests" / "unit" / "operator" / "golden" / "deployment_mlserver-1.x.yaml"
RUNTIME_FILES = {
    "mlserver": "mlserver-1.x",
    "triton": "triton-2.x",
    "ovms": "ovms-1.x",
    "torchserve": "torchserve-0.x",
}


@functools.cache
def crd_schemas() -> dict[str, Any]:
    """kind -> openAPIV3Schema of the CRDs in the repository's crds/."""
    schemas = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = crd["spec"]["versions"]
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate(doc: Manifest) -> None:
    """Raise if `doc` is not a valid object of its kind (built-in or one of our CRDs)."""
    if doc["apiVersion"].startswith("serving.kserve.io/"):
        jsonschema.Draft4Validator(crd_schemas()[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def operator_deployment(docs: list[Manifest]) -> Manifest:
    return one(docs, "Deployment", "modelmesh-controller")


def operator_container(docs: list[Manifest]) -> Manifest:
    (container,) = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def secret_data(secret: Manifest) -> dict[str, str]:
    assert "data" not in secret, "the chart writes stringData"
    return dict(secret["stringData"])


def config_runtime(name: str) -> Manifest:
    loaded: Manifest = yaml.safe_load((ROOT / "config" / "runtimes" / f"{name}.yaml").read_text())
    return loaded


# ---------------------------------------------------------------- lint and validity


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_strict_is_clean(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=SCENARIOS[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint test above can fail: a copy of the chart with a bad template does not lint."""
    broken = tmp_path / "mmesh"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.missing }\n")
    result = helm("lint", "--strict", str(broken))
    assert result.returncode != 0


def test_every_rendered_manifest_is_valid(scenario: tuple[str, Manifest]) -> None:
    _, values = scenario
    docs = render(values)
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:
            first_line = str(exc).splitlines()[0]
            pytest.fail(f"{doc['kind']} {doc['metadata'].get('name')}: {first_line}")


def test_validation_rejects_bad_manifests() -> None:
    """The validity test can fail: a wrong type in a built-in kind and in a runtime spec."""
    docs = render({})
    deployment = operator_deployment(docs)
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    runtime = one(docs, "ClusterServingRuntime", "mlserver-1.x")
    runtime["spec"]["multiModel"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        validate(runtime)


def test_every_object_is_in_the_release_namespace_or_cluster_scoped(
    scenario: tuple[str, Manifest],
) -> None:
    cluster_kinds = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    cluster_kinds.add("ClusterServingRuntime")
    for doc in render(scenario[1]):
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in cluster_kinds:
            assert namespace is None, doc["metadata"]
        else:
            assert namespace == NAMESPACE, doc["metadata"]


# ---------------------------------------------------------------- CRDs and runtimes


def test_chart_crds_are_identical_to_the_repository_crds() -> None:
    ours = sorted(p.name for p in (CHART / "crds").iterdir())
    theirs = sorted(p.name for p in (ROOT / "crds").iterdir())
    assert ours == theirs
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_rendered_crds_are_the_repository_crds() -> None:
    rendered = {d["metadata"]["name"]: d for d in of_kind(render({}), "CustomResourceDefinition")}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        assert rendered.pop(crd["metadata"]["name"]) == crd
    assert not rendered


def test_runtime_files_are_identical_to_config_runtimes() -> None:
    ours = sorted(p.name for p in (CHART / "files" / "runtimes").iterdir())
    theirs = sorted(p.name for p in (ROOT / "config" / "runtimes").iterdir())
    assert ours == theirs == sorted(f"{n}.yaml" for n in RUNTIME_FILES.values())
    for name in ours:
        chart_copy = (CHART / "files" / "runtimes" / name).read_bytes()
        assert chart_copy == (ROOT / "config" / "runtimes" / name).read_bytes(), name


@pytest.mark.parametrize(
    ("namespace_scope", "kind"), [(False, "ClusterServingRuntime"), (True, "ServingRuntime")]
)
def test_runtimes_are_rendered_with_the_config_specs(namespace_scope: bool, kind: str) -> None:
    docs = render({"namespaceScope": namespace_scope})
    other = "ServingRuntime" if kind == "ClusterServingRuntime" else "ClusterServingRuntime"
    assert not of_kind(docs, other)
    rendered = {d["metadata"]["name"]: d for d in of_kind(docs, kind)}
    assert sorted(rendered) == sorted(RUNTIME_FILES.values())
    for name, runtime in rendered.items():
        source = config_runtime(name)
        assert runtime["apiVersion"] == source["apiVersion"]
        assert runtime["spec"] == source["spec"], name
        meta = runtime["metadata"]
        assert meta.get("annotations", {}) == source["metadata"].get("annotations", {})
        assert source["metadata"]["labels"].items() <= meta["labels"].items()
        assert meta.get("namespace") == (NAMESPACE if namespace_scope else None)


@pytest.mark.parametrize("disabled", sorted(RUNTIME_FILES))
def test_each_runtime_can_be_turned_off(disabled: str) -> None:
    docs = render({"runtimes": {disabled: {"enabled": False}}})
    names = {d["metadata"]["name"] for d in of_kind(docs, "ClusterServingRuntime")}
    assert names == {n for k, n in RUNTIME_FILES.items() if k != disabled}


# ---------------------------------------------------------------- the operator Deployment


def test_operator_runs_non_root_without_capabilities(scenario: tuple[str, Manifest]) -> None:
    docs = render(scenario[1])
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    container = operator_container(docs)
    pod_ctx, ctx = pod["securityContext"], container["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and ctx["runAsNonRoot"] is True
    assert pod_ctx["runAsUser"] > 0 and pod_ctx["runAsGroup"] > 0
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= container["resources"].keys()
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_operator_user_zero_is_refused() -> None:
    with pytest.raises(RenderError, match="non-root"):
        render({"operator": {"runAsUser": 0}})


def test_operator_image_and_command() -> None:
    container = operator_container(render({}))
    assert container["image"] == "mmesh-operator:latest"
    assert container["command"] == ["python", "-m", "mmesh.operator"]
    custom = render({"operator": {"image": {"repository": "reg.example/mmesh-op", "tag": "1.2"}}})
    assert operator_container(custom)["image"] == "reg.example/mmesh-op:1.2"


def _liveness_path() -> str:
    """The path `python -m mmesh.operator` hands kopf as its liveness endpoint."""
    tree = ast.parse((ROOT / "mmesh" / "operator" / "__main__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            last = node.values[-1]
            if isinstance(last, ast.Constant) and str(last.value).startswith("/"):
                return str(last.value)
    raise AssertionError("no liveness URL in mmesh/operator/__main__.py")


def test_operator_probes_hit_kopfs_health_endpoint() -> None:
    container = operator_container(render({"operator": {"healthPort": 9090}}))
    env = env_of(container)
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["HEALTH_PORT"]) == 9090
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == _liveness_path() == "/healthz"
        assert get["port"] == port["name"]


def test_operator_env_names_are_the_settings_names(scenario: tuple[str, Manifest]) -> None:
    container = operator_container(render(scenario[1]))
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names
    env = env_of(container)
    aliases = {f.alias for f in OperatorSettings.model_fields.values()}
    extra = {e["name"] for e in scenario[1].get("operator", {}).get("extraEnv", [])}
    assert set(env) - extra <= aliases
    required = {f.alias for f in OperatorSettings.model_fields.values() if f.is_required()}
    assert required <= set(env)


@pytest.mark.parametrize("namespace_scope", [False, True])
def test_operator_settings_parse_from_the_rendered_pod(
    namespace_scope: bool, tmp_path: Path
) -> None:
    """Mount the rendered etcd Secret where the pod would, read the settings from the
    rendered env: the operator sees the quickstart etcd Service and the chosen scope."""
    docs = render({"namespaceScope": namespace_scope, "quickstart": True})
    deployment = operator_deployment(docs)
    container = operator_container(docs)
    env = env_of(container)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/mmesh/etcd")
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    secret = one(docs, "Secret", secret_name)
    for key, value in secret_data(secret).items():
        (tmp_path / key).write_text(value)
    connection_path = env["ETCD_CONNECTION"]
    assert connection_path.startswith(mount["mountPath"] + "/")
    env["ETCD_CONNECTION"] = str(tmp_path / Path(connection_path).name)
    assert env["NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    env["NAMESPACE"] = NAMESPACE
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    env["POD_NAME"] = "modelmesh-controller-7f9c-abcde"
    settings = OperatorSettings.model_validate(env)  # the rendered env only, not ours
    assert settings.pod_name == "modelmesh-controller-7f9c-abcde"
    assert settings.namespace_scope is namespace_scope
    assert settings.health_port == 8081
    connection = settings.etcd_connection()
    (endpoint,) = connection.endpoints
    service = one(docs, "Service", "etcd")
    assert endpoint.host == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert endpoint.port == service["spec"]["ports"][0]["port"] == 2379
    assert connection.root_prefix == "modelmesh-serving"
    assert not connection.tls and connection.username is None


# ---------------------------------------------------------------- etcd connection


def _operator_secret_name(docs: list[Manifest]) -> str:
    volumes = operator_deployment(docs)["spec"]["template"]["spec"]["volumes"]
    (name,) = [v["secret"]["secretName"] for v in volumes if "secret" in v]
    return str(name)


def test_cluster_scope_keeps_the_operators_secret_apart_from_the_runtime_pods_one() -> None:
    """In cluster scope the operator writes ETCD_SECRET_NAME into its own namespace too
    (with a per-namespace root prefix); its own connection must live elsewhere."""
    docs = render({"quickstart": True})
    env = env_of(operator_container(docs))
    assert env["ETCD_SECRET_NAME"] == "model-serving-etcd"
    assert _operator_secret_name(docs) == "model-serving-etcd-operator"
    assert [
        s["metadata"]["name"] for s in of_kind(docs, "Secret") if "etcd" in s["metadata"]["name"]
    ] == ["model-serving-etcd-operator"]


def test_namespace_scope_shares_one_secret_with_the_runtime_pods() -> None:
    docs = render({"namespaceScope": True, "quickstart": True})
    env = env_of(operator_container(docs))
    assert env["ETCD_SECRET_NAME"] == _operator_secret_name(docs) == "model-serving-etcd"
    one(docs, "Secret", "model-serving-etcd")


def test_full_etcd_connection_from_values() -> None:
    docs = render(SCENARIOS["everything-set"])
    secret = one(docs, "Secret", _operator_secret_name(docs))
    doc = json.loads(secret_data(secret)["etcd_connection"])
    assert doc["endpoints"] == "https://etcd-a:2379,https://etcd-b:2379"
    connection = EtcdConnection.from_json(secret_data(secret)["etcd_connection"])
    assert [str(e) for e in connection.endpoints] == ["etcd-a:2379", "etcd-b:2379"]
    assert connection.tls and connection.username == "mmesh" and connection.password == "secret"
    assert (
        connection.ca_certificate is not None and "BEGIN CERTIFICATE" in connection.ca_certificate
    )


def test_a_password_without_a_user_is_refused() -> None:
    with pytest.raises(RenderError, match="userid"):
        render({"etcd": {"connection": {"endpoints": "http://e:2379", "password": "p"}}})


def test_no_connection_given_means_no_secret_but_the_expected_mount() -> None:
    docs = render({})
    assert not [s for s in of_kind(docs, "Secret") if "etcd" in s["metadata"]["name"]]
    assert _operator_secret_name(docs) == "model-serving-etcd-operator"


def test_existing_secret_is_used_and_not_created() -> None:
    docs = render({"etcd": {"existingSecret": "my-etcd"}, "quickstart": True})
    assert _operator_secret_name(docs) == "my-etcd"
    assert not [s for s in of_kind(docs, "Secret") if "etcd" in s["metadata"]["name"]]
    with pytest.raises(RenderError, match="another name"):
        render({"etcd": {"existingSecret": "model-serving-etcd"}})
    ns_docs = render({"namespaceScope": True, "etcd": {"existingSecret": "model-serving-etcd"}})
    assert _operator_secret_name(ns_docs) == "model-serving-etcd"


def test_a_new_connection_restarts_the_operator() -> None:
    def checksum(endpoints: str) -> str:
        docs = render({"etcd": {"connection": {"endpoints": endpoints}}})
        annotations = operator_deployment(docs)["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/etcd-connection"])

    assert checksum("http://a:2379") != checksum("http://b:2379")


# ---------------------------------------------------------------- model-serving-config


def test_no_serving_config_by_default() -> None:
    assert not of_kind(render({}), "ConfigMap")


def test_serving_config_is_what_the_operator_merges() -> None:
    docs = render(SCENARIOS["everything-set"])
    config_map = one(docs, "ConfigMap", CONFIG_MAP_NAME)
    text = config_map["data"][CONFIG_MAP_KEY]
    assert yaml.safe_load(text) == SCENARIOS["everything-set"]["servingConfig"]
    config = merge_config(DEFAULTS_YAML, text)
    assert config.pods_per_runtime == 1
    assert config.scale_to_zero.enabled is False
    assert config.inference_service_name == "modelmesh-serving"  # untouched default


# ---------------------------------------------------------------- quickstart


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_quickstart_off_renders_no_quickstart_services() -> None:
    docs = render({})
    assert not [d for d in docs if d["metadata"]["name"] in {"etcd", "minio", "storage-config"}]


def test_quickstart_services_select_their_pods_and_use_pinned_images() -> None:
    docs = render({"quickstart": True})
    for name in ("etcd", "minio"):
        deployment, service = one(docs, "Deployment", name), one(docs, "Service", name)
        pod = deployment["spec"]["template"]
        assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
        assert _selects(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        (container,) = pod["spec"]["containers"]
        image, _, tag = container["image"].rpartition(":")
        assert image and re.fullmatch(r"v\d+\.\d+\.\d+", tag), container["image"]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        (service_port,) = service["spec"]["ports"]
        assert ports[service_port["targetPort"]] == service_port["port"]
    etcd_pod = one(docs, "Deployment", "etcd")["spec"]["template"]["spec"]
    assert etcd_pod["securityContext"]["runAsNonRoot"] is True


def test_quickstart_storage_config_is_read_by_the_puller() -> None:
    docs = render({"quickstart": True})
    entries = {
        k: json.loads(v) for k, v in secret_data(one(docs, "Secret", "storage-config")).items()
    }
    assert set(entries) == {"localMinIO"}
    spec = resolve_storage(ModelKey(storage_key="localMinIO"), entries)
    assert spec.type is StorageType.S3
    assert spec.bucket == "modelmesh-example-models"
    assert spec.endpoint_url == f"http://minio.{NAMESPACE}.svc:9000"
    assert spec.region == "us-south"
    credentials = secret_data(one(docs, "Secret", "minio-credentials"))
    assert (spec.access_key_id, spec.secret_access_key) == (
        credentials["accessKey"],
        credentials["secretKey"],
    )
    minio = one(docs, "Service", "minio")
    assert minio["spec"]["ports"][0]["port"] == 9000


def test_quickstart_storage_secret_follows_the_configured_name() -> None:
    docs = render({"quickstart": True, "servingConfig": {"storageSecretName": "my-storage"}})
    one(docs, "Secret", "my-storage")
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == "storage-config"]


# ---------------------------------------------------------------- NetworkPolicies


@functools.cache
def golden_runtime_pod() -> Manifest:
    loaded: Manifest = yaml.safe_load(GOLDEN_RUNTIME.read_text())["spec"]["template"]
    return loaded


def _router_ports() -> tuple[set[int], int]:
    """(external ports of the router container, its pod-to-pod port) in the rendered
    runtime Deployment (tests/unit/operator/golden)."""
    (mm,) = [c for c in golden_runtime_pod()["spec"]["containers"] if c["name"] == "mm"]
    external = {p["containerPort"] for p in mm["ports"]}
    internal = int(next(e["value"] for e in mm["env"] if e["name"] == "MM_INTERNAL_GRPC_PORT"))
    return external, internal


def test_runtime_policy_guards_the_pod_to_pod_port_only() -> None:
    docs = render({})
    policy = one(docs, "NetworkPolicy", "modelmesh-runtimes")
    labels = golden_runtime_pod()["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert _selects(selector, labels)
    external, internal = _router_ports()
    guarded: list[tuple[Manifest, set[int]]] = []
    open_rules: list[tuple[Manifest, set[int]]] = []
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        (guarded if "from" in rule else open_rules).append((rule, ports))
    ((rule, ports),) = guarded
    assert ports == {internal}
    (peer,) = rule["from"]
    assert peer == {"podSelector": {"matchLabels": selector}}
    ((_, open_ports),) = open_rules
    assert open_ports == external


def test_runtime_policy_follows_the_serving_config() -> None:
    docs = render({"servingConfig": {"inferenceServiceName": "mesh2", "metrics": {"port": 9999}}})
    policy = one(docs, "NetworkPolicy", "modelmesh-runtimes")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"modelmesh-service": "mesh2"}
    open_ports = {
        p["port"] for r in policy["spec"]["ingress"] if "from" not in r for p in r["ports"]
    }
    assert open_ports == {8033, 8008, 9999}


def test_operator_policy_admits_only_the_health_port() -> None:
    docs = render({})
    policy = one(docs, "NetworkPolicy", "modelmesh-controller")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert _selects(selector, operator_deployment(docs)["spec"]["template"]["metadata"]["labels"])
    assert not _selects(selector, golden_runtime_pod()["metadata"]["labels"])
    ((rule),) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [
        operator_container(docs)["ports"][0]["containerPort"]
    ]


def test_quickstart_etcd_policy_admits_mesh_and_operator_pods() -> None:
    docs = render({"quickstart": True})
    policy = one(docs, "NetworkPolicy", "etcd")
    etcd_labels = one(docs, "Deployment", "etcd")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], etcd_labels)
    ((rule),) = policy["spec"]["ingress"]
    mesh_peer, operator_peer = rule["from"]
    assert mesh_peer["namespaceSelector"] == {}
    (expression,) = mesh_peer["podSelector"]["matchExpressions"]
    assert expression["key"] in golden_runtime_pod()["metadata"]["labels"]
    operator_labels = operator_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert _selects(operator_peer["podSelector"]["matchLabels"], operator_labels)


def test_network_policies_can_be_turned_off() -> None:
    assert of_kind(render({"quickstart": True}), "NetworkPolicy")
    assert not of_kind(
        render({"quickstart": True, "networkPolicies": {"enabled": False}}), "NetworkPolicy"
    )


# ---------------------------------------------------------------- values.yaml


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def undocumented_keys(text: str) -> list[str]:
    """Keys of a values file with no comment line right above them (same indentation)."""
    lines = text.splitlines()
    missing = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if match is None:
            continue
        above = lines[number - 1] if number else ""
        if not above.startswith(match["indent"] + "#"):
            missing.append(f"line {number + 1}: {match['key']}")
    return missing


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    assert undocumented_keys(text) == []
    top_level = set(yaml.safe_load(text))
    documented = {m["key"] for m in map(KEY_LINE.match, text.splitlines()) if m and not m["indent"]}
    assert top_level == documented


def test_the_documentation_check_finds_a_bare_key() -> None:
    assert undocumented_keys("# a\na: 1\nb:\n  # c\n  c: 2\n  d: 3\n") == ["line 3: b", "line 6: d"]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "mmesh"
    assert chart["type"] == "application"
    project = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in project
