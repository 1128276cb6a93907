"""Per-namespace etcd users on a real etcd with TLS and authentication: each namespace's
user reads and writes its own prefix only, and ensuring the user again is idempotent and
repairs a password etcd no longer accepts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV, StoreAuthFailed
from mmesh.core.etcd_admin import AuthAdmin
from mmesh.core.etcd_config import from_mapping
from mmesh.operator import etcd_users
from mmesh.operator.etcd_users import NamespaceAccess, Op, Step
from mmesh.operator.handlers.runtimes import ensure_namespace_user
from mmesh.operator.registrations import MeshScope
from tests.fixtures.etcd import SecureEtcd

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def admin(secure_etcd: SecureEtcd) -> AsyncIterator[tuple[AuthAdmin, EtcdKV, MeshScope]]:
    kv = await EtcdKV.connect(from_mapping(secure_etcd.secret()))
    try:
        yield AuthAdmin(kv), kv, MeshScope(f"/users-{uuid.uuid4().hex[:8]}")
    finally:
        await kv.close()


def access_of(scope: MeshScope, namespace: str) -> NamespaceAccess:
    return etcd_users.namespace_access(namespace, scope.root_for(namespace))


async def connect_as(
    secure_etcd: SecureEtcd, access: NamespaceAccess, password: str, root: str
) -> EtcdKV:
    secret = secure_etcd.secret(userid=access.user, password=password, root_prefix=root)
    return await EtcdKV.connect(from_mapping(secret))


def denied(exc: pytest.ExceptionInfo[StoreUnavailable]) -> bool:
    return "permission denied" in str(exc.value)


async def test_namespace_users_see_only_their_own_prefix(
    admin: tuple[AuthAdmin, EtcdKV, MeshScope], secure_etcd: SecureEtcd
) -> None:
    auth, root_kv, scope = admin
    a, b = access_of(scope, "team-a"), access_of(scope, "team-b")
    created = await ensure_namespace_user(auth, a, "pw-a-1")
    assert created == etcd_users.plan(a, etcd_users.Found(None, None, password_works=False))
    await ensure_namespace_user(auth, b, "pw-b-1")
    assert await auth.user_roles(a.user) == (a.role,)
    assert await auth.role_grants(a.role) == (a.grant,)

    layout_a = scope.layout("team-a", "modelmesh-serving")
    layout_b = scope.layout("team-b", "modelmesh-serving")
    b_key = layout_b.registry_prefix + "m"
    await root_kv.put(b_key, b"b's model")

    kv_a = await connect_as(secure_etcd, a, "pw-a-1", scope.root_for("team-a"))
    try:
        # everything a router does, under its own namespace's prefix
        key = layout_a.registry_prefix + "m"
        revision = await kv_a.put(key, b"a's model")
        got = await kv_a.get(key)
        assert got is not None and got.value == b"a's model"
        assert await kv_a.put_if(key, b"v2", mod_revision=revision)
        found, at = await kv_a.range_prefix(layout_a.base)
        assert [k.key for k in found] == [key]
        events = kv_a.watch_prefix(layout_a.base, start_revision=at + 1)
        try:
            lease = await kv_a.grant_lease(5)
            await kv_a.put(layout_a.instances_prefix + "i1", b"{}", lease=lease)
            event = await asyncio.wait_for(anext(events), timeout=10)
            assert event.key == layout_a.instances_prefix + "i1"
            await lease.refresh()
            await lease.revoke()
        finally:
            await events.aclose()
        assert await kv_a.delete(key)

        # nothing of namespace b, nor anything outside the namespace
        with pytest.raises(StoreUnavailable) as exc:
            await kv_a.get(b_key)
        assert denied(exc)
        with pytest.raises(StoreUnavailable) as exc:
            await kv_a.put(b_key, b"overwritten")
        assert denied(exc)
        with pytest.raises(StoreUnavailable) as exc:
            await kv_a.range_prefix(layout_b.base)
        assert denied(exc)
        with pytest.raises(StoreUnavailable) as exc:
            await kv_a.range_prefix(scope.root_prefix + "/")
        assert denied(exc)
        with pytest.raises(StoreUnavailable) as exc:
            await kv_a.get(scope.root_prefix + "/mm_ns/team-a")  # the prefix without '/'
        assert denied(exc)
        # nor administer users
        with pytest.raises(StoreUnavailable) as exc:
            await AuthAdmin(kv_a).user_roles(b.user)
        assert denied(exc)
    finally:
        await kv_a.close()
    still = await root_kv.get(b_key)
    assert still is not None and still.value == b"b's model"


async def test_ensuring_again_keeps_the_password(
    admin: tuple[AuthAdmin, EtcdKV, MeshScope], secure_etcd: SecureEtcd
) -> None:
    auth, _, scope = admin
    a = access_of(scope, "again")
    await ensure_namespace_user(auth, a, "kept-pw")
    assert await ensure_namespace_user(auth, a, "kept-pw") == ()
    assert await auth.password_works(a.user, "kept-pw")
    kv = await connect_as(secure_etcd, a, "kept-pw", scope.root_for("again"))
    await kv.close()


async def test_a_wrong_password_or_a_deleted_user_is_repaired(
    admin: tuple[AuthAdmin, EtcdKV, MeshScope], secure_etcd: SecureEtcd
) -> None:
    auth, root_kv, scope = admin
    a = access_of(scope, "repair")
    await ensure_namespace_user(auth, a, "stored-pw")
    await auth.change_password(a.user, "someone-else's")
    assert not await auth.password_works(a.user, "stored-pw")
    with pytest.raises(StoreAuthFailed):
        await connect_as(secure_etcd, a, "stored-pw", scope.root_for("repair"))

    assert await ensure_namespace_user(auth, a, "stored-pw") == (Step(Op.CHANGE_PASSWORD),)
    kv = await connect_as(secure_etcd, a, "stored-pw", scope.root_for("repair"))
    await kv.close()

    secure_etcd.etcdctl("user", "delete", a.user)
    assert await ensure_namespace_user(auth, a, "stored-pw") == (
        Step(Op.ADD_USER),
        Step(Op.GRANT_ROLE, role=a.role),
    )
    assert await auth.password_works(a.user, "stored-pw")

    # the operator's own (older) token keeps working after all these auth changes
    await root_kv.put(scope.root_prefix + "/probe", b"1")
    await auth.change_password(a.user, "stored-pw")  # one more auth change, then reads
    assert await root_kv.get(scope.root_prefix + "/probe") is not None
    found, _ = await root_kv.range_prefix(scope.root_prefix + "/")
    assert found
