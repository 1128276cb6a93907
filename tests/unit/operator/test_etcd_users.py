"""Per-namespace etcd users: names, the prefix grant, stored passwords and the plan."""

from __future__ import annotations

import base64
import json

import pytest

from mmesh.core.etcd_config import EtcdConnection, from_mapping
from mmesh.core.records import KeyLayout
from mmesh.operator.etcd_users import (
    READWRITE,
    Found,
    Op,
    Step,
    enabled,
    key_prefix,
    namespace_access,
    plan,
    range_end,
    stored_password,
    user_name,
)
from mmesh.operator.registrations import MeshScope

AUTH = from_mapping({"endpoints": "h:1", "userid": "root", "password": "pw"})
NO_AUTH = EtcdConnection.from_endpoint("h:1")


def test_enabled_only_in_cluster_scope_with_auth() -> None:
    assert enabled(AUTH, namespace_scope=False)
    assert not enabled(AUTH, namespace_scope=True)
    assert not enabled(NO_AUTH, namespace_scope=False)
    assert not enabled(NO_AUTH, namespace_scope=True)


def test_user_name() -> None:
    assert user_name("team-a") == "mmesh-ns-team-a"
    for bad in ("", "a/b", "é"):
        with pytest.raises(ValueError):
            user_name(bad)


@pytest.mark.parametrize(
    ("root", "prefix"),
    [
        ("/mm/mm_ns/a", "/mm/mm_ns/a/"),
        ("/mm//mm_ns/a/", "/mm/mm_ns/a/"),
        ("mm_ns/a", "mm_ns/a/"),
        ("/mm_ns/a", "/mm_ns/a/"),
    ],
)
def test_key_prefix_matches_the_key_layout(root: str, prefix: str) -> None:
    assert key_prefix(root) == prefix
    assert KeyLayout(root, "modelmesh-serving").base.startswith(prefix)


@pytest.mark.parametrize("root", ["", "/", "//"])
def test_key_prefix_refuses_to_grant_everything(root: str) -> None:
    with pytest.raises(ValueError):
        key_prefix(root)


def test_range_end_of_a_prefix() -> None:
    assert range_end(b"/r/mm_ns/a/") == b"/r/mm_ns/a0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"a\xff\xff") == b"b"
    with pytest.raises(ValueError):
        range_end(b"\xff")
    with pytest.raises(ValueError):
        range_end(b"")


def test_range_end_excludes_sibling_namespaces() -> None:
    access = namespace_access("a", "/r/mm_ns/a")
    inside = [b"/r/mm_ns/a/", b"/r/mm_ns/a/mm/svc/registry/m", b"/r/mm_ns/a/\xff"]
    outside = [b"/r/mm_ns/ab/x", b"/r/mm_ns/a", b"/r/mm_ns/b/", b"/r/mm/x", b"/r/mm_ns/a0"]
    assert all(access.key <= k < access.range_end for k in inside)
    assert not any(access.key <= k < access.range_end for k in outside)


def test_namespace_access_from_the_mesh_scope() -> None:
    scope = MeshScope("/root")
    access = namespace_access("team-a", scope.root_for("team-a"))
    assert access.user == access.role == "mmesh-ns-team-a"
    assert access.key == b"/root/mm_ns/team-a/"
    assert access.range_end == b"/root/mm_ns/team-a0"
    assert access.grant == (access.key, access.range_end, READWRITE)
    layout = scope.layout("team-a", "modelmesh-serving")
    assert layout.registry_prefix.encode().startswith(access.key)
    assert layout.leader_key.encode().startswith(access.key)


def _secret(doc: object) -> dict[str, object]:
    text = json.dumps(doc).encode()
    return {"data": {"etcd_connection": base64.b64encode(text).decode()}}


def test_stored_password() -> None:
    user = "mmesh-ns-a"
    assert stored_password(_secret({"userid": user, "password": "s3cret"}), user) == "s3cret"
    assert stored_password(_secret({"userid": "root", "password": "pw"}), user) is None
    assert stored_password(_secret({"userid": user, "password": ""}), user) is None
    assert stored_password(_secret({"userid": user}), user) is None
    assert stored_password(_secret(["not", "an", "object"]), user) is None
    assert stored_password({"data": {"etcd_connection": "%%%"}}, user) is None
    assert stored_password({"data": {}}, user) is None
    assert stored_password({}, user) is None
    assert stored_password(None, user) is None


ACCESS = namespace_access("a", "/r/mm_ns/a")
GRANT = ACCESS.grant


def test_plan_creates_everything_when_nothing_exists() -> None:
    steps = plan(ACCESS, Found(None, None, password_works=False))
    assert steps == (
        Step(Op.ADD_ROLE),
        Step(Op.GRANT_PERMISSION, grant=GRANT),
        Step(Op.ADD_USER),
        Step(Op.GRANT_ROLE, role=ACCESS.role),
    )


def test_plan_is_empty_when_etcd_already_matches() -> None:
    assert plan(ACCESS, Found((ACCESS.role,), (GRANT,), password_works=True)) == ()


def test_plan_changes_a_wrong_password_only() -> None:
    found = Found((ACCESS.role,), (GRANT,), password_works=False)
    assert plan(ACCESS, found) == (Step(Op.CHANGE_PASSWORD),)


def test_plan_for_an_existing_user_without_the_role() -> None:
    found = Found((), None, password_works=True)
    assert plan(ACCESS, found) == (
        Step(Op.ADD_ROLE),
        Step(Op.GRANT_PERMISSION, grant=GRANT),
        Step(Op.GRANT_ROLE, role=ACCESS.role),
    )


def test_plan_narrows_a_widened_role_and_user() -> None:
    wide = (b"/", b"\0", READWRITE)
    found = Found((ACCESS.role, "root"), (wide, GRANT), password_works=True)
    assert plan(ACCESS, found) == (
        Step(Op.REVOKE_PERMISSION, grant=wide),
        Step(Op.REVOKE_ROLE, role="root"),
    )


def test_plan_upgrades_a_read_only_grant() -> None:
    read_only = (ACCESS.key, ACCESS.range_end, "READ")
    found = Found((ACCESS.role,), (read_only,), password_works=True)
    assert plan(ACCESS, found) == (Step(Op.GRANT_PERMISSION, grant=GRANT),)
