"""The router's TLS policy (MM_TLS_* settings) and the certificate checks behind reloads."""

from __future__ import annotations

import datetime

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mmesh.router.settings import RouterSettings
from mmesh.router.tls import (
    BadCertificate,
    CertBundle,
    ClientAuth,
    TlsPolicy,
    parse_client_auth,
    peer_name,
    tls_policy,
)

KV = {"KV_STORE": "etcd:127.0.0.1:2379"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pems(cert: trustme.LeafCert) -> tuple[bytes, bytes]:
    return cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()


# ---------------------------------------------------------------- policy


def test_tls_is_off_without_files() -> None:
    assert tls_policy(cert_path="", key_path="") is None
    assert RouterSettings.model_validate(KV).tls_policy() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ClientAuth.NONE),
        ("NONE", ClientAuth.NONE),
        ("OPTIONAL", ClientAuth.OPTIONAL),
        ("require", ClientAuth.REQUIRE),
        (" Require ", ClientAuth.REQUIRE),
    ],
)
def test_client_auth_values(text: str, expected: ClientAuth) -> None:
    assert parse_client_auth(text) is expected


def test_reference_env_names_build_the_policy() -> None:
    settings = RouterSettings.model_validate(
        {
            **KV,
            "MM_TLS_KEY_CERT_PATH": "/tls/tls.crt",
            "MM_TLS_PRIVATE_KEY_PATH": "/tls/tls.key",
            "MM_TLS_CLIENT_AUTH": "REQUIRE",
            "MM_TLS_TRUST_CERT_PATH": "/tls/tls.crt, /tls/ca.crt,",
            "MM_TLS_PRIVATE_KEY_PASSPHRASE": "hunter22",
        }
    )
    policy = settings.tls_policy()
    assert policy == TlsPolicy(
        "/tls/tls.crt",
        "/tls/tls.key",
        ClientAuth.REQUIRE,
        ("/tls/tls.crt", "/tls/ca.crt"),
        "hunter22",
    )
    assert "hunter22" not in repr(policy)
    assert "hunter22" not in repr(settings)
    assert policy.watched_paths == ("/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt")


def test_without_trust_files_the_certificate_itself_is_trusted() -> None:
    policy = tls_policy(cert_path="/c", key_path="/k", client_auth="OPTIONAL")
    assert policy is not None
    assert policy.verify_paths == ("/c",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MM_TLS_KEY_CERT_PATH": "/c"}, "both"),
        ({"MM_TLS_PRIVATE_KEY_PATH": "/k"}, "both"),
        ({"MM_TLS_CLIENT_AUTH": "REQUIRE"}, "need MM_TLS_KEY_CERT_PATH"),
        ({"MM_TLS_TRUST_CERT_PATH": "/ca"}, "need MM_TLS_KEY_CERT_PATH"),
        (
            {
                "MM_TLS_KEY_CERT_PATH": "/c",
                "MM_TLS_PRIVATE_KEY_PATH": "/k",
                "MM_TLS_CLIENT_AUTH": "yes",
            },
            "NONE, OPTIONAL or REQUIRE",
        ),
    ],
)
def test_contradictory_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouterSettings.model_validate({**KV, **env})


def test_metrics_scheme() -> None:
    https = {**KV, "MM_METRICS": "prometheus:port=2112;scheme=https"}
    assert RouterSettings.model_validate(https).metrics_https
    assert not RouterSettings.model_validate(KV).metrics_https


# ---------------------------------------------------------------- material


def test_bundle_of_matching_material(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("modelmesh-serving.ns.svc", "127.0.0.1")
    chain, key = pems(leaf)
    bundle = CertBundle.of(chain, key, [ca.cert_pem.bytes()])
    assert bundle.peer_name == "modelmesh-serving.ns.svc"
    assert bundle.serial == x509.load_pem_x509_certificate(chain).serial_number
    assert bundle.key == key
    assert bundle.trust == ca.cert_pem.bytes()
    assert "PRIVATE" not in repr(bundle)


def test_key_of_another_certificate_is_refused(ca: trustme.CA) -> None:
    chain, _ = pems(ca.issue_cert("a.example"))
    _, other_key = pems(ca.issue_cert("a.example"))
    with pytest.raises(BadCertificate, match="does not belong"):
        CertBundle.of(chain, other_key, [ca.cert_pem.bytes()])


def test_garbage_is_refused(ca: trustme.CA) -> None:
    chain, key = pems(ca.issue_cert("a.example"))
    with pytest.raises(BadCertificate, match="certificate"):
        CertBundle.of(b"not a cert", key, [ca.cert_pem.bytes()])
    with pytest.raises(BadCertificate, match="private key"):
        CertBundle.of(chain, b"not a key", [ca.cert_pem.bytes()])
    with pytest.raises(BadCertificate, match="trust"):
        CertBundle.of(chain, key, [b"junk"])


def test_encrypted_key_is_decrypted_with_the_passphrase(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("a.example")
    chain, key = pems(leaf)
    private = serialization.load_pem_private_key(key, password=None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    bundle = CertBundle.of(chain, encrypted, [ca.cert_pem.bytes()], passphrase="s3cret")
    assert b"ENCRYPTED" not in bundle.key
    assert serialization.load_pem_private_key(bundle.key, password=None)
    with pytest.raises(BadCertificate, match="private key"):
        CertBundle.of(chain, encrypted, [ca.cert_pem.bytes()])
    with pytest.raises(BadCertificate, match="private key"):
        CertBundle.of(chain, encrypted, [ca.cert_pem.bytes()], passphrase="wrong")


def _self_signed(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("*.modelmesh-serving.svc", "x.example"), "mmesh-peer.modelmesh-serving.svc"),
        (("127.0.0.1",), "127.0.0.1"),
        (("::1",), "::1"),
        (("svc.ns", "127.0.0.1"), "svc.ns"),
    ],
)
def test_peer_name(ca: trustme.CA, names: tuple[str, ...], expected: str) -> None:
    chain, _ = pems(ca.issue_cert(*names))
    assert peer_name(x509.load_pem_x509_certificate(chain)) == expected


def test_peer_name_falls_back_to_the_common_name() -> None:
    assert peer_name(_self_signed("mm.internal")) == "mm.internal"
