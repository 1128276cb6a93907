"""EtcdKV against etcd servers of its own: restarts, outages, TLS and auth.

The shared contract lives in test_kv_contract.py; these tests need a server
they can stop, or one started with TLS or authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from mmesh.core.errors import StoreUnavailable
from mmesh.core.etcd import EtcdKV
from mmesh.core.etcd_config import EtcdConnection, from_mapping
from mmesh.core.kv import WatchEvent
from tests.fixtures.etcd import (
    ETCDCTL_BIN,
    EtcdServer,
    make_data_dir,
    require_etcd,
    start_etcd,
)
from tests.fixtures.procs import free_port

EVENT_TIMEOUT_S = 10.0


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)


async def put_when_back(kv: EtcdKV, key: str, value: bytes) -> int:
    """Put, retrying while the client reconnects to a restarted server."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENT_TIMEOUT_S
    while True:
        try:
            return await kv.put(key, value)
        except StoreUnavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
def data_dir():
    require_etcd()
    path = make_data_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_requests_fail_clearly_while_etcd_is_down_and_watch_resumes_after(
    tmp_path: Path, data_dir: Path
):
    cport, pport = free_port(), free_port()

    def etcd(log: str) -> contextlib.AbstractContextManager[EtcdServer]:
        # the same data dir and ports each time: a restart of one member
        return start_etcd(tmp_path / log, data_dir=data_dir, client_port=cport, peer_port=pport)

    with etcd("etcd-1.log") as server:
        kv = await EtcdKV.connect(EtcdConnection.from_endpoint(server.endpoint), timeout_s=2)
        rev = await kv.put("/r/a", b"1")
        events = kv.watch_prefix("/r/", start_revision=rev)
        assert (await next_event(events)).key == "/r/a"
    try:
        with pytest.raises(StoreUnavailable, match=f"etcd at {server.endpoint} failed on get"):
            await kv.get("/r/a")
        pending = asyncio.create_task(next_event(events))
        with etcd("etcd-2.log"):
            rev_b = await put_when_back(kv, "/r/b", b"2")
            event = await asyncio.wait_for(pending, EVENT_TIMEOUT_S)
            # the watch went on from where it was: no replay of /r/a, nothing lost
            assert (event.kind, event.key, event.mod_revision) == ("PUT", "/r/b", rev_b)
            got = await kv.get("/r/a")
            assert got is not None
            assert got.value == b"1"
    finally:
        await kv.close()


async def test_watch_gives_up_after_its_retry_budget(tmp_path: Path, data_dir: Path):
    with start_etcd(tmp_path / "etcd.log", data_dir=data_dir) as server:
        kv = await EtcdKV.connect(
            EtcdConnection.from_endpoint(server.endpoint), timeout_s=1, watch_retry_s=0.5
        )
        rev = await kv.put("/g/a", b"1")
        events = kv.watch_prefix("/g/", start_revision=rev)
        await next_event(events)
    try:
        with pytest.raises(StoreUnavailable, match=f"etcd at {server.endpoint} failed on watch"):
            await next_event(events)
    finally:
        await kv.close()


# ---------------------------------------------------------------- TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("mmesh-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    return {
        "dir": str(tmp_path),
        "ca": ca.cert_pem.bytes().decode(),
        "client_cert": client_cert.cert_chain_pems[0].bytes().decode(),
        "client_key": client_cert.private_key_pem.bytes().decode(),
    }


async def test_mutual_tls(tmp_path: Path, tls_files: dict[str, str]):
    d = tls_files["dir"]
    args = [
        f"--cert-file={d}/server.pem",
        f"--key-file={d}/server.key",
        "--client-cert-auth",
        f"--trusted-ca-file={d}/ca.pem",
    ]
    health_check = ssl.create_default_context(cafile=f"{d}/ca.pem")
    health_check.load_cert_chain(f"{d}/client.pem")
    etcd = start_etcd(
        tmp_path / "etcd.log", extra_args=args, scheme="https", ssl_context=health_check
    )
    with etcd as server:
        base = {"endpoints": f"https://{server.endpoint}"}
        mutual = {
            **base,
            "certificate": tls_files["ca"],
            "client_certificate": tls_files["client_cert"],
            "client_key": tls_files["client_key"],
        }
        kv = await EtcdKV.connect(from_mapping(mutual), timeout_s=3)
        try:
            await kv.put("/tls/k", b"secret")
            got = await kv.get("/tls/k")
            assert got is not None
            assert got.value == b"secret"
        finally:
            await kv.close()
        # the server demands a client certificate
        with pytest.raises(StoreUnavailable, match=server.endpoint):
            await EtcdKV.connect(
                from_mapping({**base, "certificate": tls_files["ca"]}), timeout_s=3
            )
        # a plaintext client cannot talk to it either
        with pytest.raises(StoreUnavailable):
            await EtcdKV.connect(EtcdConnection.from_endpoint(server.endpoint), timeout_s=3)


async def test_ca_certificate_file_is_read_when_connecting(tmp_path: Path):
    conn = from_mapping({"endpoints": "127.0.0.1:1", "certificate_file": str(tmp_path / "none")})
    with pytest.raises(StoreUnavailable, match="CA certificate file"):
        await EtcdKV.connect(conn)


# ---------------------------------------------------------------- auth


def etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(
        [str(ETCDCTL_BIN), f"--endpoints={endpoint}", *args],
        check=True,
        capture_output=True,
        timeout=10,
    )


async def test_user_and_password_and_token_renewal(tmp_path: Path):
    if not ETCDCTL_BIN.exists():
        pytest.skip(f"etcdctl is not installed at {ETCDCTL_BIN}")
    with start_etcd(tmp_path / "etcd.log", extra_args=["--auth-token-ttl=1"]) as server:
        etcdctl(server.endpoint, "role", "add", "root")
        etcdctl(server.endpoint, "user", "add", "root:rootpw")
        etcdctl(server.endpoint, "user", "grant-role", "root", "root")
        etcdctl(server.endpoint, "auth", "enable")
        secret = {"endpoints": server.endpoint, "userid": "root", "password": "rootpw"}

        kv = await EtcdKV.connect(from_mapping(secret), timeout_s=3)
        try:
            await kv.put("/auth/k", b"v")
            first_token = kv._client.metadata
            # Idle past the token ttl (1 s, checked every 1 s): etcd forgets the
            # token, and the next request must log in again by itself.
            await asyncio.sleep(2.2)
            got = await kv.get("/auth/k")
            assert got is not None
            assert got.value == b"v"
            assert kv._client.metadata != first_token
        finally:
            await kv.close()

        with pytest.raises(StoreUnavailable, match="authentication failed"):
            await EtcdKV.connect(from_mapping({**secret, "password": "wrong"}), timeout_s=3)
        anonymous = await EtcdKV.connect(EtcdConnection.from_endpoint(server.endpoint))
        try:
            with pytest.raises(StoreUnavailable, match="user name is empty"):
                await anonymous.get("/auth/k")
        finally:
            await anonymous.close()
