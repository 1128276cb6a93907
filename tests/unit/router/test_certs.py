"""CertFiles: reading the TLS files, and reloading them when they change (no sockets)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
import trustme

from mmesh.router.certs import CertFiles, PeerCredentials
from mmesh.router.peers import PeerPool
from mmesh.router.tls import BadCertificate, ClientAuth, TlsPolicy

MIB = 1024 * 1024


def write(path: Path, data: bytes) -> None:
    """Replace the file the way a secret volume does: a new inode under the same name."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install(d: Path, leaf: trustme.LeafCert, *, key: bool = True, cert: bool = True) -> None:
    if cert:
        write(d / "tls.crt", leaf.cert_chain_pems[0].bytes())
    if key:
        write(d / "tls.key", leaf.private_key_pem.bytes())


def serial(leaf: trustme.LeafCert) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def policy(tmp_path: Path, ca: trustme.CA) -> TlsPolicy:
    install(tmp_path, ca.issue_cert("svc.ns"))
    write(tmp_path / "ca.crt", ca.cert_pem.bytes())
    trust = (str(tmp_path / "tls.crt"), str(tmp_path / "ca.crt"))
    return TlsPolicy(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), ClientAuth.NONE, trust)


def test_reads_the_files(policy: TlsPolicy, ca: trustme.CA) -> None:
    generation, bundle = CertFiles(policy).current()
    assert generation == 1
    assert bundle.peer_name == "svc.ns"
    assert ca.cert_pem.bytes() in bundle.trust


def test_unchanged_files_are_not_read_again(policy: TlsPolicy) -> None:
    files = CertFiles(policy)
    generation, bundle = files.current()
    assert files.current() == (generation, bundle)
    assert files.current()[1] is bundle


def test_a_rotated_certificate_is_picked_up(policy: TlsPolicy, ca: trustme.CA) -> None:
    files = CertFiles(policy)
    new = ca.issue_cert("svc.ns")
    install(Path(policy.cert_path).parent, new)
    generation, bundle = files.current()
    assert generation == 2
    assert bundle.serial == serial(new)


def test_half_rotated_files_keep_the_old_certificate(
    policy: TlsPolicy, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    files = CertFiles(policy)
    old_serial = files.current()[1].serial
    new = ca.issue_cert("svc.ns")
    d = Path(policy.cert_path).parent
    install(d, new, key=False)  # the certificate is new, its key not yet
    with caplog.at_level(logging.WARNING, "mmesh.router.certs"):
        assert files.current() == (1, files.current()[1])
        assert files.current()[1].serial == old_serial
    assert [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(caplog.records) == 1, "a refused state is reported once, not per handshake"
    install(d, new, cert=False)
    generation, bundle = files.current()
    assert (generation, bundle.serial) == (2, serial(new))


def test_a_missing_trust_file_is_skipped(tmp_path: Path, ca: trustme.CA) -> None:
    install(tmp_path, ca.issue_cert("svc.ns"))
    trust = (str(tmp_path / "tls.crt"), str(tmp_path / "ca.crt"))
    policy = TlsPolicy(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), trust_paths=trust)
    _, bundle = CertFiles(policy).current()
    assert ca.cert_pem.bytes() not in bundle.trust
    write(tmp_path / "ca.crt", ca.cert_pem.bytes())  # appearing later counts as a change
    _, bundle = CertFiles(policy).current()
    assert ca.cert_pem.bytes() in bundle.trust


def test_unusable_files_fail_at_start(tmp_path: Path, ca: trustme.CA) -> None:
    with pytest.raises(BadCertificate, match=r"tls\.crt"):
        CertFiles(TlsPolicy(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")))
    install(tmp_path, ca.issue_cert("svc.ns"))
    only_missing = (str(tmp_path / "nope.crt"),)
    policy = TlsPolicy(
        str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), trust_paths=only_missing
    )
    with pytest.raises(BadCertificate, match="none of the TLS trust files"):
        CertFiles(policy)


def test_peer_credentials_follow_the_files(policy: TlsPolicy, ca: trustme.CA) -> None:
    files = CertFiles(policy)
    peers = PeerCredentials(files, check_interval_s=0)
    first = peers.current()
    assert first.options == (("grpc.ssl_target_name_override", "svc.ns"),)
    assert peers.current() is first
    install(Path(policy.cert_path).parent, ca.issue_cert("other.ns"))
    renewed = peers.current()
    assert renewed.generation == 2
    assert renewed.options == (("grpc.ssl_target_name_override", "other.ns"),)


async def test_peer_pool_opens_new_channels_after_rotation(
    policy: TlsPolicy, ca: trustme.CA
) -> None:
    tls = PeerCredentials(CertFiles(policy), check_interval_s=0)
    pool = PeerPool(max_message_bytes=MIB, tls=tls, retire_after_s=0.01)
    first = pool.get("10.0.0.1:8080")
    assert pool.get("10.0.0.1:8080") is first
    install(Path(policy.cert_path).parent, ca.issue_cert("svc.ns"))
    second = pool.get("10.0.0.1:8080")
    assert second is not first
    assert pool.get("10.0.0.1:8080") is second
    await asyncio.sleep(0.2)
    assert not pool._retired, "the old channel is closed after the grace period"
    await pool.close()
