"""The chart's RBAC grants exactly the Kubernetes API calls the operator makes, per scope.

The calls are collected from the code, not listed by hand:
- kopf's: every resource in kopf's handler registry is listed and watched cluster-wide
  (`kopf.run(clusterwide=True)`), resources with change handlers are patched (finalizer,
  progress annotations), Events are posted, CRDs are listed and watched;
- mmesh.operator.kube's: a `Kube` on a recording HTTP client runs the namespace reconcile
  (`apply_plan` on a plan the operator itself computes, once against an empty namespace and
  once against stale objects) and every other `Kube` method the handlers call;
- owner references with blockOwnerDeletion on the planned Deployments need `update` on the
  owner's `finalizers` subresource (OwnerReferencesPermissionEnforcement).
The rendered Role/ClusterRole, reached through their bindings, must allow each call and
nothing else.
"""

from __future__ import annotations

import ast
import functools
import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
import yaml
from kubernetes import client
from kubernetes.client import rest

import mmesh.operator.handlers
from mmesh.operator import hpa
from mmesh.operator.handlers import runtimes as runtime_handlers
from mmesh.operator.kube import Kube
from mmesh.operator.registrations import MeshScope
from mmesh.operator.resources import RuntimeKind, ServingRuntime
from mmesh.operator.service import MANAGED_LABELS, SERVICE_LABEL
from mmesh.operator.serving_config import merge_config
from mmesh.operator.settings import CONFIG_MAP_NAME, OperatorSettings
from tests.unit.chart.conftest import NAMESPACE, ROOT, Manifest, of_kind, render

OPERATOR = ROOT / "mmesh" / "operator"
OTHER_NAMESPACE = "team-a"
CORE_PLURALS = {"configmaps": "ConfigMap", "namespaces": "Namespace"}
CLUSTER_SCOPED = {"namespaces", "clusterservingruntimes", "customresourcedefinitions"}


@dataclass(frozen=True, slots=True)
class Request:
    """One authorization check: what RBAC sees of an API call."""

    verb: str
    group: str
    resource: str
    """Plural, with `/subresource` when there is one."""
    namespace: str | None
    """None: a cluster-scoped object, or a list/watch across all namespaces."""
    name: str | None = None

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {self.group or 'core'}/{self.resource} {self.name or ''} {where}"


# ---------------------------------------------------------------- the calls kopf makes


@functools.cache
def crd_plurals() -> dict[str, tuple[str, str]]:
    """plural -> (group, kind) of our CRDs."""
    out = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["plural"]] = (crd["spec"]["group"], crd["spec"]["names"]["kind"])
    return out


def kopf_runs_clusterwide() -> bool:
    """`python -m mmesh.operator` passes clusterwide=True to kopf.run (then every watch is a
    cluster-wide list/watch, in namespace scope too)."""
    tree = ast.parse((OPERATOR / "__main__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "kopf.run":
            for kw in node.keywords:
                if kw.arg == "clusterwide":
                    return isinstance(kw.value, ast.Constant) and kw.value.value is True
    return False


def kopf_requests(namespace: str) -> set[Request]:
    """What kopf itself does for the registered handlers (objects live in `namespace`)."""
    assert mmesh.operator.handlers.__all__  # importing it registers the handlers
    assert kopf_runs_clusterwide(), "the RBAC below assumes kopf watches cluster-wide"
    registry = kopf.get_default_registry()
    assert not registry._webhooks.get_all_handlers(), "webhooks need RBAC the chart lacks"
    requests: set[Request] = set()
    groups = (
        (registry._indexing, False),
        (registry._watching, False),
        (registry._spawning, False),
        (registry._changing, True),
    )
    for group_registry, patches in groups:
        for handler in group_registry.get_all_handlers():
            selector = handler.selector
            assert selector is not None
            plural = selector.plural or selector.any_name
            assert isinstance(plural, str)
            known = plural in crd_plurals() or plural in CORE_PLURALS
            assert known, f"handler {handler.id}: unknown resource {plural!r}"
            group = selector.group or ""
            requests |= {
                Request("list", group, plural, None),
                Request("watch", group, plural, None),
            }
            if patches or getattr(handler, "requires_finalizer", False):
                requests.add(Request("patch", group, plural, namespace))
    requests |= {
        Request("list", "apiextensions.k8s.io", "customresourcedefinitions", None),
        Request("watch", "apiextensions.k8s.io", "customresourcedefinitions", None),
        Request("create", "", "events", namespace),
    }
    return requests


# ---------------------------------------------------------------- the calls Kube makes


def request_of(method: str, url: str) -> Request:
    """The RBAC view of one HTTP request to the Kubernetes API."""
    split = urllib.parse.urlsplit(url)
    parts = split.path.strip("/").split("/")
    group, rest_parts = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if rest_parts[0] == "namespaces" and len(rest_parts) > 2:
        namespace, rest_parts = rest_parts[1], rest_parts[2:]
    resource = rest_parts[0]
    name = rest_parts[1] if len(rest_parts) > 1 else None
    if len(rest_parts) > 2:
        resource = f"{resource}/{rest_parts[2]}"
    watching = "watch=true" in split.query.lower()
    verbs = {
        "GET": "get" if name else ("watch" if watching else "list"),
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if name else "deletecollection",
    }
    return Request(verbs[method], group, resource, namespace, name)


Responder = Callable[[str, Request], tuple[int, Any]]


class RecordingApiClient(client.ApiClient):
    """Answers every call from `responder` and records what RBAC would check."""

    def __init__(self, responder: Responder) -> None:
        super().__init__(client.Configuration(host="http://kube.invalid"))
        self.responder = responder
        self.requests: list[Request] = []

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> rest.RESTResponse:
        request = request_of(method, url)
        self.requests.append(request)
        status, payload = self.responder(method, request)
        raw = SimpleNamespace(
            status=status, reason="", data=json.dumps(payload).encode(), headers={}
        )
        return rest.RESTResponse(raw)


def empty_namespace(method: str, request: Request) -> tuple[int, Any]:
    """Nothing exists yet: reads 404, lists empty, writes succeed."""
    if method == "GET":
        return (404, {}) if request.name else (200, {"items": []})
    return 200, {}


def stale_namespace(method: str, request: Request) -> tuple[int, Any]:
    """Everything exists but differs, plus a leftover runtime Deployment and Service."""
    base = request.resource.split("/")[0]
    if method == "GET" and request.name:
        labels = dict(MANAGED_LABELS)
        return 200, {"metadata": {"name": request.name, "labels": labels}, "spec": {"x": 1}}
    if method == "GET" and base in ("deployments", "services", "horizontalpodautoscalers"):
        labels = {**MANAGED_LABELS, SERVICE_LABEL: "modelmesh-serving"}
        stray = {"metadata": {"name": "leftover", "labels": labels}}
        return 200, {"items": [stray]}
    if method == "GET":
        return 200, {"items": []}
    return 200, {}


def runtime_body(name: str, kind: RuntimeKind, namespace: str | None) -> Manifest:
    body: Manifest = yaml.safe_load((ROOT / "config" / "runtimes" / f"{name}.yaml").read_text())
    body["kind"] = kind.value
    body["metadata"]["uid"] = f"uid-{name}"
    if namespace:
        body["metadata"]["namespace"] = namespace
    return body


def operator_plan(namespace_scope: bool, namespace: str) -> runtime_handlers.NamespacePlan:
    """The namespace reconcile plan the operator computes: one ServingRuntime (autoscaled by
    an HPA) and one ClusterServingRuntime, the default config without scale-to-zero, the given
    scope."""
    settings = OperatorSettings.model_validate(
        {
            "ETCD_CONNECTION": '{"endpoints": "http://etcd:2379", "root_prefix": "mmesh"}',
            "NAMESPACE": NAMESPACE,
            "NAMESPACE_SCOPE": namespace_scope,
        }
    )
    defaults = (OPERATOR / "config_defaults.yaml").read_text()
    ctx = SimpleNamespace(
        settings=settings,
        config=merge_config(defaults, "scaleToZero: {enabled: false}"),
        registrations=SimpleNamespace(scope=MeshScope("mmesh", namespace_scope, NAMESPACE)),
        on_leader=[],
    )
    sr_body = runtime_body("mlserver-1.x", RuntimeKind.SERVING_RUNTIME, namespace)
    sr_body["metadata"].setdefault("annotations", {})[hpa.AUTOSCALER_CLASS_ANNOTATION] = "hpa"
    sr = ServingRuntime.from_body(sr_body, RuntimeKind.SERVING_RUNTIME)
    csr = ServingRuntime.from_body(
        runtime_body("triton-2.x", RuntimeKind.CLUSTER_SERVING_RUNTIME, None),
        RuntimeKind.CLUSTER_SERVING_RUNTIME,
    )
    indexes = runtime_handlers.Indexes(
        runtimes={namespace: [sr]},  # type: ignore[arg-type]  # plain dicts stand in for kopf's
        cluster_runtimes={runtime_handlers.CLUSTER: [csr]},  # type: ignore[arg-type]
        models={},  # type: ignore[arg-type]
    )
    sync = runtime_handlers.NamespaceSync(ctx)  # type: ignore[arg-type]
    return sync.plan(namespace, indexes, now=0.0)


# The Kube methods the handlers may call, and how this test exercises each.
GENERIC_KUBE_METHODS = {"get", "apply", "list", "delete"}
"""Exercised through apply_plan; test_kube_calls_are_all_exercised pins their call sites."""
DIRECT_KUBE_CALLS: dict[str, Callable[[Kube, str], object]] = {
    "patch_isvc_status": lambda k, ns: k.patch_isvc_status(ns, "isvc", {"url": "grpc://x"}),
    "list_isvcs": lambda k, ns: k.list_isvcs(),
    "annotate_isvc": lambda k, ns: k.annotate_isvc(ns, "isvc", "a", "b"),
    "read_config_map": lambda k, ns: k.read_config_map(NAMESPACE, CONFIG_MAP_NAME),
    "list_namespaces": lambda k, ns: k.list_namespaces(),
    "read_secret_data": lambda k, ns: k.read_secret_data(ns, "storage-config"),
    "claim_exists": lambda k, ns: k.claim_exists(ns, "models-pvc"),
}
CLUSTER_SCOPE_ONLY = {"list_namespaces"}
"""Called from lifecycle.start only when not in namespace scope (pinned below)."""


def kube_requests(namespace_scope: bool, namespace: str) -> set[Request]:
    plan = operator_plan(namespace_scope, namespace)
    requests: set[Request] = set()
    for responder in (empty_namespace, stale_namespace):
        api = RecordingApiClient(responder)
        runtime_handlers.apply_plan(Kube(api), plan)
        for method, call in DIRECT_KUBE_CALLS.items():
            if namespace_scope and method in CLUSTER_SCOPE_ONLY:
                continue
            call(Kube(api), namespace)
        requests |= set(api.requests)
    for deployment in plan.deployments:
        for owner in deployment["metadata"].get("ownerReferences", []):
            if owner.get("blockOwnerDeletion"):
                group = owner["apiVersion"].split("/")[0]
                plural = next(p for p, (_, kind) in crd_plurals().items() if kind == owner["kind"])
                owner_ns = None if plural in CLUSTER_SCOPED else namespace
                requests.add(
                    Request("update", group, f"{plural}/finalizers", owner_ns, owner["name"])
                )
    return requests


def operator_requests(namespace_scope: bool) -> set[Request]:
    """Every request of the operator; namespaced ones in the namespaces it serves."""
    namespaces = [NAMESPACE] if namespace_scope else [NAMESPACE, OTHER_NAMESPACE]
    requests: set[Request] = set()
    for namespace in namespaces:
        requests |= kopf_requests(namespace) | kube_requests(namespace_scope, namespace)
    return requests


# ---------------------------------------------------------------- evaluating the chart's RBAC


@dataclass(frozen=True, slots=True)
class Grants:
    """The rules bound to the operator's ServiceAccount: (namespace or None, rule)."""

    bound: tuple[tuple[str | None, Manifest], ...]

    def allows(self, request: Request) -> bool:
        return any(self._rule_allows(rule, request) for ns, rule in self._applicable(request))

    def _applicable(self, request: Request) -> Iterable[tuple[str | None, Manifest]]:
        for ns, rule in self.bound:
            if ns is None or (request.namespace is not None and ns == request.namespace):
                yield ns, rule

    @staticmethod
    def _rule_allows(rule: Manifest, request: Request) -> bool:
        names = rule.get("resourceNames")
        return (
            request.group in rule["apiGroups"]
            and request.resource in rule["resources"]
            and request.verb in rule["verbs"]
            and (not names or request.name in names)
        )


def grants_of(docs: list[Manifest]) -> Grants:
    (account,) = of_kind(docs, "ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }
    roles = {("Role", d["metadata"]["name"]): d for d in of_kind(docs, "Role")}
    roles |= {("ClusterRole", d["metadata"]["name"]): d for d in of_kind(docs, "ClusterRole")}
    bound: list[tuple[str | None, Manifest]] = []
    for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
        if binding["roleRef"]["name"].endswith("-node-reader"):
            assert subject not in binding["subjects"]  # the runtime pods', not the operator's
            continue
        assert binding["subjects"] == [subject]
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]  # a dangling roleRef fails here
        where = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        bound += [(where, rule) for rule in role["rules"]]
    return Grants(tuple(bound))


def unneeded_grants(grants: Grants, requests: set[Request]) -> list[str]:
    """(group, resource, verb) grants no request needs. A namespaced binding's grant must be
    used in its namespace; a cluster binding's grant by a request no namespaced grant
    covers (so a ClusterRole does not quietly widen what a Role already gives)."""
    namespaced = Grants(tuple((ns, r) for ns, r in grants.bound if ns is not None))
    unneeded = []
    for ns, rule in grants.bound:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    narrowed = {**rule, "apiGroups": [group], "resources": [resource]}
                    single = Grants(((ns, {**narrowed, "verbs": [verb]}),))
                    used = any(
                        single.allows(r) and (ns is not None or not namespaced.allows(r))
                        for r in requests
                    )
                    if not used:
                        unneeded.append(f"{verb} {group or 'core'}/{resource} (bound in {ns})")
    return unneeded


def wildcards(docs: list[Manifest]) -> list[str]:
    found = []
    for role in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                found += [
                    f"{role['metadata']['name']}.{key}" for v in rule.get(key, []) if "*" in v
                ]
    return found


# ---------------------------------------------------------------- the tests


SCOPES = [pytest.param(False, id="cluster-scope"), pytest.param(True, id="namespace-scope")]


@pytest.mark.parametrize("namespace_scope", SCOPES)
def test_every_operator_call_is_allowed(namespace_scope: bool) -> None:
    grants = grants_of(render({"namespaceScope": namespace_scope}))
    denied = sorted(str(r) for r in operator_requests(namespace_scope) if not grants.allows(r))
    assert denied == []


@pytest.mark.parametrize("namespace_scope", SCOPES)
def test_nothing_beyond_the_operators_calls_is_granted(namespace_scope: bool) -> None:
    docs = render({"namespaceScope": namespace_scope})
    assert wildcards(docs) == []
    assert unneeded_grants(grants_of(docs), operator_requests(namespace_scope)) == []


def test_namespace_scope_writes_only_in_its_namespace() -> None:
    """Outside the release namespace, namespace scope may only read (and mark the cluster
    runtimes it owns Deployments of as in use)."""
    grants = grants_of(render({"namespaceScope": True}))
    cluster_writes = [
        f"{verb} {rule['resources']}"
        for ns, rule in grants.bound
        if ns is None
        for verb in rule["verbs"]
        if verb not in ("get", "list", "watch")
    ]
    assert cluster_writes == ["update ['clusterservingruntimes/finalizers']"]
    elsewhere = Request("patch", "apps", "deployments", OTHER_NAMESPACE, "x")
    assert not grants.allows(elsewhere)
    assert grants.allows(Request("patch", "apps", "deployments", NAMESPACE, "x"))


def test_secrets_are_limited_to_the_etcd_and_storage_secrets() -> None:
    docs = render({"etcd": {"secretName": "my-etcd"}, "servingConfig": {"storageSecretName": "s"}})
    grants = grants_of(docs)
    assert grants.allows(Request("patch", "", "secrets", OTHER_NAMESPACE, "my-etcd"))
    assert grants.allows(Request("get", "", "secrets", OTHER_NAMESPACE, "s"))
    assert not grants.allows(Request("patch", "", "secrets", OTHER_NAMESPACE, "s"))
    assert not grants.allows(Request("get", "", "secrets", OTHER_NAMESPACE, "storage-config"))
    assert not grants.allows(Request("list", "", "secrets", None))
    namespaced = grants_of(render({"namespaceScope": True}))
    secret_rules = [r for _, r in namespaced.bound if "secrets" in r["resources"]]
    assert secret_rules == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["storage-config"],
         "verbs": ["get"]}
    ]  # fmt: skip


def test_rbac_can_be_left_out() -> None:
    docs = render({"rbac": {"create": False}})
    kinds = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert not [d for d in docs if d["kind"] in kinds]


def test_runtime_pods_may_read_nodes_and_nothing_else() -> None:
    """Zones: the runtime pods' service account gets `get nodes` (their zone label), in the
    release namespace and the listed ones; not the operator, not any other verb."""
    values = {"servingConfig": {"serviceAccountName": "runtime-sa"}, "zones": {"namespaces": ["a"]}}
    docs = render(values)
    (role,) = [
        d for d in of_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-node-reader")
    ]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    (binding,) = [
        d
        for d in of_kind(docs, "ClusterRoleBinding")
        if d["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "runtime-sa", "namespace": NAMESPACE},
        {"kind": "ServiceAccount", "name": "runtime-sa", "namespace": "a"},
    ]
    default = render({})
    (binding,) = [
        d for d in of_kind(default, "ClusterRoleBinding") if "node-reader" in d["metadata"]["name"]
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default", "namespace": NAMESPACE}
    ]
    off = render({"zones": {"readNodes": False}})
    assert not [d for d in off if "node-reader" in d["metadata"]["name"]]


def test_cluster_role_names_differ_between_releases() -> None:
    def names(namespace: str) -> set[str]:
        docs = render({"namespaceScope": True}, namespace=namespace)
        return {d["metadata"]["name"] for d in of_kind(docs, "ClusterRole")}

    assert names("a").isdisjoint(names("b"))


# ---------------------------------------------------------------- the checker can fail


NO_NODE_READER = {"zones": {"readNodes": False}}


def test_a_missing_rule_is_reported() -> None:
    docs = render(NO_NODE_READER)
    (role,) = of_kind(docs, "ClusterRole")
    role["rules"] = [r for r in role["rules"] if "services" not in r["resources"]]
    grants = grants_of(docs)
    denied = {r.resource for r in operator_requests(False) if not grants.allows(r)}
    assert denied == {"services"}


def test_an_extra_verb_is_reported() -> None:
    docs = render({"namespaceScope": True, **NO_NODE_READER})
    (role,) = of_kind(docs, "Role")
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    (cluster_role,) = of_kind(docs, "ClusterRole")
    cluster_role["rules"].append(
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]}
    )
    unneeded = unneeded_grants(grants_of(docs), operator_requests(True))
    assert sorted(unneeded) == [
        "get core/pods (bound in modelmesh-serving)",
        "patch apps/deployments (bound in None)",
    ]


def test_request_of_maps_urls_to_rbac() -> None:
    base = "http://k/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices"
    assert request_of("PATCH", f"{base}/a/status") == Request(
        "patch", "serving.kserve.io", "inferenceservices/status", "ns", "a"
    )
    assert request_of("GET", "http://k/api/v1/namespaces") == Request(
        "list", "", "namespaces", None
    )
    assert request_of("GET", "http://k/api/v1/namespaces/x/pods?watch=true") == Request(
        "watch", "", "pods", "x"
    )
    assert request_of("POST", "http://k/apis/apps/v1/namespaces/x/deployments") == Request(
        "create", "apps", "deployments", "x"
    )


# ---------------------------------------------------------------- the model above is the code's


def _kube_call_sites() -> set[tuple[str, str, str]]:
    """(module, enclosing function, Kube method) for every `kube.X` / `ctx.kube.X` use."""
    sites = set()
    for path in sorted(OPERATOR.rglob("*.py")):
        if path.name == "kube.py":
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Attribute):
                    continue
                base = node.value
                is_kube = (isinstance(base, ast.Name) and base.id == "kube") or (
                    isinstance(base, ast.Attribute) and base.attr == "kube"
                )
                if is_kube:
                    sites.add((path.stem, func.name, node.attr))
    return sites


def test_kube_calls_are_all_exercised() -> None:
    sites = _kube_call_sites()
    used = {method for _, _, method in sites}
    assert used == GENERIC_KUBE_METHODS | set(DIRECT_KUBE_CALLS), (
        "a Kube method was added or dropped: update DIRECT_KUBE_CALLS and the chart's RBAC"
    )
    generic_sites = {(m, f) for m, f, method in sites if method in GENERIC_KUBE_METHODS}
    # `_confine` reads the namespace's etcd Secret, which apply_plan reads (and so is granted)
    # in the same scope: cluster scope, where the plan carries that Secret.
    allowed = {("runtimes", "apply_plan"), ("runtimes", "_apply_secret"), ("runtimes", "_confine")}
    allowed |= {("runtimes", "_delete_stale_autoscalers"), ("runtimes", "_apply_deployments")}
    assert generic_sites <= allowed


def test_namespaces_are_listed_only_in_cluster_scope() -> None:
    tree = ast.parse((OPERATOR / "handlers" / "lifecycle.py").read_text())
    guarded = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and "namespace_scope" in ast.unparse(node.test)
        and "list_namespaces" in ast.unparse(node)
    ]
    assert guarded and ast.unparse(guarded[0].test).startswith("not ")
