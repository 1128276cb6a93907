"""I/O: etcd user and role administration through an `EtcdKV`'s connection.

aetcd 1.0.0 has no API for etcd's Auth service, so `AuthAdmin` sends the generated
`etcdserverpb.Auth` requests (aetcd.rpc messages) over the store's own gRPC channel with its
token (`EtcdKV.auth_call`), so TLS, re-login on an expired token and error translation are
the store's. The store's user needs etcd's `root` role. Each method is one call and reports
etcd's answer in plain values; what to call is decided elsewhere (e.g.
`mmesh.operator.etcd_users.plan`). Passwords travel only inside requests: never in messages,
logs or reprs. Failures are StoreUnavailable (the server's reason in the message).
"""

from __future__ import annotations

import aetcd.rpc

from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV

Grant = tuple[bytes, bytes, str]
"""(key, range_end, permission type name: READ, WRITE or READWRITE)."""

_PERMISSION = aetcd.rpc.Permission


def _says(exc: BaseException, phrase: str) -> bool:
    return phrase in str(exc).lower()


class AuthAdmin:
    """etcd users and roles, administered with an EtcdKV's credentials."""

    def __init__(self, kv: EtcdKV) -> None:
        self._kv = kv

    def __repr__(self) -> str:
        return f"AuthAdmin({self._kv!r})"

    async def user_roles(self, user: str) -> tuple[str, ...] | None:
        """The roles `user` holds; None if there is no such user."""
        request = aetcd.rpc.AuthUserGetRequest(name=user)
        try:
            reply = await self._kv.auth_call(f"get user {user}", "UserGet", request)
        except StoreUnavailable as exc:
            if _says(exc, "user name not found"):
                return None
            raise
        return tuple(reply.roles)

    async def role_grants(self, role: str) -> tuple[Grant, ...] | None:
        """The permissions of `role`; None if there is no such role."""
        request = aetcd.rpc.AuthRoleGetRequest(role=role)
        try:
            reply = await self._kv.auth_call(f"get role {role}", "RoleGet", request)
        except StoreUnavailable as exc:
            if _says(exc, "role name not found"):
                return None
            raise
        return tuple(
            (bytes(p.key), bytes(p.range_end), _PERMISSION.Type.Name(p.permType))
            for p in reply.perm
        )

    async def password_works(self, user: str, password: str) -> bool:
        """Whether etcd accepts `password` for `user` (False for an unknown user)."""
        request = aetcd.rpc.AuthenticateRequest(name=user, password=password)
        try:
            await self._kv.auth_call(
                f"check password of {user}", "Authenticate", request, token=False
            )
        except StoreUnavailable as exc:
            if _says(exc, "authentication failed") or _says(exc, "invalid user id or password"):
                return False
            raise
        return True

    async def add_role(self, role: str) -> None:
        request = aetcd.rpc.AuthRoleAddRequest(name=role)
        await self._kv.auth_call(f"add role {role}", "RoleAdd", request)

    async def grant_permission(self, role: str, grant: Grant) -> None:
        key, end, kind = grant
        perm = _PERMISSION(permType=_PERMISSION.Type.Value(kind), key=key, range_end=end)
        request = aetcd.rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
        what = f"grant {kind} on [{key!r}, {end!r}) to role {role}"
        await self._kv.auth_call(what, "RoleGrantPermission", request)

    async def revoke_permission(self, role: str, key: bytes, range_end: bytes) -> None:
        request = aetcd.rpc.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=range_end)
        what = f"revoke [{key!r}, {range_end!r}) from role {role}"
        await self._kv.auth_call(what, "RoleRevokePermission", request)

    async def add_user(self, user: str, password: str) -> None:
        request = aetcd.rpc.AuthUserAddRequest(name=user, password=password)
        await self._kv.auth_call(f"add user {user}", "UserAdd", request)

    async def change_password(self, user: str, password: str) -> None:
        request = aetcd.rpc.AuthUserChangePasswordRequest(name=user, password=password)
        await self._kv.auth_call(f"change password of {user}", "UserChangePassword", request)

    async def grant_role(self, user: str, role: str) -> None:
        request = aetcd.rpc.AuthUserGrantRoleRequest(user=user, role=role)
        await self._kv.auth_call(f"grant role {role} to {user}", "UserGrantRole", request)

    async def revoke_role(self, user: str, role: str) -> None:
        request = aetcd.rpc.AuthUserRevokeRoleRequest(name=user, role=role)
        await self._kv.auth_call(f"revoke role {role} from {user}", "UserRevokeRole", request)
