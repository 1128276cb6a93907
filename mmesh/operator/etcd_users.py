"""Pure: the etcd user and role that confine one namespace's runtime pods to its own keys.

In cluster scope with etcd authentication on (the operator's connection has a `userid`),
every managed namespace gets an etcd role `mmesh-ns-<namespace>` with READWRITE on exactly
the namespace's key prefix `<root>/mm_ns/<namespace>/` (a prefix grant: the range end is the
prefix with its last byte raised by one), and an etcd user of the same name that holds only
that role. The namespace's etcd Secret carries that user's name and password instead of the
operator's, so a runtime pod of namespace A cannot read or write namespace B's keys.

This module names the user and role, computes the prefix and its range end, reads the
password a namespace's Secret already holds (kept across reconciles and operator restarts),
and plans the etcd calls that bring the user and role to the wanted state from what etcd
reported. `mmesh.core.etcd_admin` makes the calls; the namespace reconcile
(`handlers.runtimes`) wires them together. Without authentication, or in namespace scope,
none of this applies and the Secret keeps the operator's connection as it is.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmesh.core.etcd_config import EtcdConnection
from mmesh.core.records import KeyLayout

NAME_PREFIX = "mmesh-ns-"
"""etcd user and role of namespace N: `mmesh-ns-N` (namespaces are DNS labels)."""
READWRITE = "READWRITE"
"""authpb.Permission.Type name of the one grant a namespace role holds."""
_PROBE = "x"
_MESH_SEGMENT = f"mm/{_PROBE}/"

Grant = tuple[bytes, bytes, str]
"""(key, range_end, permission type name) of one etcd role permission."""


def enabled(connection: EtcdConnection, *, namespace_scope: bool) -> bool:
    """Whether namespaces get users of their own: cluster scope with etcd auth on."""
    return connection.username is not None and not namespace_scope


def user_name(namespace: str) -> str:
    """The etcd user (and role) name of `namespace`."""
    if not namespace or "/" in namespace or not namespace.isascii():
        raise ValueError(f"not a namespace name: {namespace!r}")
    return NAME_PREFIX + namespace


def key_prefix(namespace_root: str) -> str:
    """Prefix of every key a mesh with root prefix `namespace_root` writes, ending in '/'.

    Normalised the way `records.KeyLayout` joins its keys (the layout's base is
    `<prefix>mm/<service>/`), so the grant covers exactly those keys."""
    base = KeyLayout(namespace_root, _PROBE).base
    prefix = base[: -len(_MESH_SEGMENT)]
    if prefix in ("", "/"):
        raise ValueError(f"root prefix {namespace_root!r} would grant every key")
    return prefix


def range_end(prefix: bytes) -> bytes:
    """etcd range end that makes [prefix, end) cover every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    raise ValueError("a prefix of only 0xff bytes (or empty) has no prefix range end")


@dataclass(frozen=True, slots=True)
class NamespaceAccess:
    """The etcd user, role and key range one namespace's runtime pods get."""

    namespace: str
    user: str
    role: str
    key: bytes
    """The namespace's key prefix, `<root>/mm_ns/<namespace>/`."""
    range_end: bytes

    @property
    def grant(self) -> Grant:
        return (self.key, self.range_end, READWRITE)


def namespace_access(namespace: str, namespace_root: str) -> NamespaceAccess:
    """What `namespace` gets, given the root prefix its runtime pods use
    (`MeshScope.root_for(namespace)`, i.e. `<root>/mm_ns/<namespace>`)."""
    name = user_name(namespace)
    key = key_prefix(namespace_root).encode()
    return NamespaceAccess(namespace, name, name, key, range_end(key))


def stored_password(secret: Mapping[str, Any] | None, user: str) -> str | None:
    """The password a namespace's etcd Secret (as the API returns it) holds for `user`;
    None when there is no Secret, it names another user, or it cannot be read."""
    data = (secret or {}).get("data") or {}
    encoded = data.get("etcd_connection")
    if not isinstance(encoded, str):
        return None
    try:
        doc = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("userid") != user:
        return None
    password = doc.get("password")
    return password if isinstance(password, str) and password else None


@dataclass(frozen=True, slots=True)
class Found:
    """What etcd reported about a namespace's user and role."""

    user_roles: tuple[str, ...] | None
    """Roles the user holds; None: no such user."""
    role_grants: tuple[Grant, ...] | None
    """Permissions of the role; None: no such role."""
    password_works: bool
    """The user exists and accepts the password the Secret will hold."""


class Op(enum.Enum):
    ADD_ROLE = "add role"
    GRANT_PERMISSION = "grant permission"
    REVOKE_PERMISSION = "revoke permission"
    ADD_USER = "add user"
    CHANGE_PASSWORD = "change password"
    GRANT_ROLE = "grant role"
    REVOKE_ROLE = "revoke role"


@dataclass(frozen=True, slots=True)
class Step:
    """One etcd auth call. `role` is the role to grant or revoke (user steps) and `grant`
    the permission to grant or revoke (role steps); the password is never part of a step."""

    op: Op
    role: str = ""
    grant: Grant | None = None


def plan(access: NamespaceAccess, found: Found) -> tuple[Step, ...]:
    """The calls, in order, that leave etcd with the role holding exactly the namespace's
    grant and the user holding exactly that role with the Secret's password. Empty when
    etcd already is so (reconciles then write nothing: every auth change makes etcd's
    clients log in again)."""
    steps: list[Step] = []
    if found.role_grants is None:
        steps += [Step(Op.ADD_ROLE), Step(Op.GRANT_PERMISSION, grant=access.grant)]
    else:
        steps += [
            Step(Op.REVOKE_PERMISSION, grant=g)
            for g in found.role_grants
            if (g[0], g[1]) != (access.key, access.range_end)
        ]
        if access.grant not in found.role_grants:
            steps.append(Step(Op.GRANT_PERMISSION, grant=access.grant))
    if found.user_roles is None:
        steps += [Step(Op.ADD_USER), Step(Op.GRANT_ROLE, role=access.role)]
        return tuple(steps)
    if not found.password_works:
        steps.append(Step(Op.CHANGE_PASSWORD))
    steps += [Step(Op.REVOKE_ROLE, role=r) for r in found.user_roles if r != access.role]
    if access.role not in found.user_roles:
        steps.append(Step(Op.GRANT_ROLE, role=access.role))
    return tuple(steps)
