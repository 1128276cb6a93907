"""Pure: the router's TLS policy and the facts it needs from a certificate and key.

The settings are the reference router's (modelmesh-features.md §3.7, §4.15):

    MM_TLS_KEY_CERT_PATH           PEM certificate chain (tls.crt)   } both or neither;
    MM_TLS_PRIVATE_KEY_PATH        PEM private key (tls.key)         } both = TLS on
    MM_TLS_PRIVATE_KEY_PASSPHRASE  decrypts an encrypted private key
    MM_TLS_CLIENT_AUTH             NONE | OPTIONAL | REQUIRE (gRPC 8033 and REST 8008)
    MM_TLS_TRUST_CERT_PATH         comma list of PEM files that client and peer
                                   certificates are checked against; default: the
                                   key certificate itself

With TLS on, every face a client or peer uses speaks TLS only (gRPC, REST, pod-to-pod;
/metrics too when MM_METRICS says scheme=https). Pod-to-pod traffic is always mutual TLS:
a router presents its own certificate to peers and accepts only peers whose certificate
the trust files vouch for. A router reaches a peer by IP address, while the shared pod
certificate names the Service, so peers are verified against `peer_name` (the name the
certificate itself carries) rather than against the address.

`CertBundle.of` checks the material a reload found: a certificate whose key does not
match (a rotation caught halfway) is refused, so the caller keeps serving the old one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

_WILDCARD_LABEL = "mmesh-peer"
"""Stands in for the `*` of a wildcard certificate name when peers are verified."""


class BadCertificate(ValueError):
    """TLS material that cannot be used: unreadable, malformed, or a key that doesn't fit."""


class ClientAuth(StrEnum):
    """Whether 8033 and 8008 ask clients for a certificate (MM_TLS_CLIENT_AUTH)."""

    NONE = "none"
    OPTIONAL = "optional"
    """Clients with and without a certificate are served; one that is sent is verified
    (REST). The gRPC port does not ask for it."""
    REQUIRE = "require"
    """Clients without a certificate the trust files vouch for are refused."""


def parse_client_auth(text: str) -> ClientAuth:
    """`NONE`/`OPTIONAL`/`REQUIRE`, any case; empty means NONE."""
    value = text.strip().lower() or ClientAuth.NONE.value
    try:
        return ClientAuth(value)
    except ValueError:
        raise ValueError(
            f"MM_TLS_CLIENT_AUTH must be NONE, OPTIONAL or REQUIRE, not {text!r}"
        ) from None


def split_paths(text: str) -> tuple[str, ...]:
    """A comma-separated path list, blanks dropped."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """Where the router's TLS material lives and whom it asks for certificates."""

    cert_path: str
    key_path: str
    client_auth: ClientAuth = ClientAuth.NONE
    trust_paths: tuple[str, ...] = ()
    """As configured; see `verify_paths` for what is used."""
    key_passphrase: str | None = field(default=None, repr=False)

    @property
    def verify_paths(self) -> tuple[str, ...]:
        """Files client and peer certificates are checked against."""
        return self.trust_paths or (self.cert_path,)

    @property
    def watched_paths(self) -> tuple[str, ...]:
        """Every file whose change means "reload", each once."""
        return tuple(dict.fromkeys((self.cert_path, self.key_path, *self.verify_paths)))


def tls_policy(
    *,
    cert_path: str,
    key_path: str,
    client_auth: str = "",
    trust_paths: str = "",
    key_passphrase: str = "",
) -> TlsPolicy | None:
    """The policy from the MM_TLS_* values; None when TLS is off. ValueError if they
    contradict each other."""
    auth = parse_client_auth(client_auth)
    if not cert_path and not key_path:
        if auth is not ClientAuth.NONE or trust_paths.strip():
            raise ValueError(
                "MM_TLS_CLIENT_AUTH / MM_TLS_TRUST_CERT_PATH need MM_TLS_KEY_CERT_PATH "
                "and MM_TLS_PRIVATE_KEY_PATH"
            )
        return None
    if not cert_path or not key_path:
        raise ValueError("set both MM_TLS_KEY_CERT_PATH and MM_TLS_PRIVATE_KEY_PATH, or neither")
    return TlsPolicy(
        cert_path=cert_path,
        key_path=key_path,
        client_auth=auth,
        trust_paths=split_paths(trust_paths),
        key_passphrase=key_passphrase or None,
    )


@dataclass(frozen=True, slots=True)
class CertBundle:
    """One consistent set of TLS material, as PEM bytes."""

    chain: bytes
    """The certificate chain, leaf first."""
    key: bytes = field(repr=False)
    """The private key, unencrypted (gRPC cannot take a passphrase)."""
    trust: bytes
    """Concatenated trust certificates."""
    serial: int
    """The leaf certificate's serial number, for logs."""
    peer_name: str
    """The name peers are verified against (see the module docstring)."""

    @classmethod
    def of(
        cls, chain: bytes, key: bytes, trust: Sequence[bytes], *, passphrase: str | None = None
    ) -> CertBundle:
        """Check and bundle the material; BadCertificate if it cannot be served."""
        leaf = _leaf(chain)
        private_key = _private_key(key, passphrase)
        if _public(private_key) != leaf.public_key().public_bytes(*_SPKI):
            raise BadCertificate("the private key does not belong to the certificate")
        trusted = b"".join(t if t.endswith(b"\n") else t + b"\n" for t in trust)
        if not trusted.strip():
            raise BadCertificate("no trust certificates")
        _check_certificates(trusted, "trust")
        plain = key if passphrase is None else _unencrypted(private_key)
        return cls(chain, plain, trusted, leaf.serial_number, peer_name(leaf))


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _leaf(chain: bytes) -> x509.Certificate:
    certs = _check_certificates(chain, "certificate")
    return certs[0]


def _check_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise BadCertificate(f"{what}: not a PEM certificate ({exc})") from exc
    return certs


def _private_key(pem: bytes, passphrase: str | None) -> PrivateKeyTypes:
    password = passphrase.encode() if passphrase is not None else None
    try:
        return serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        # TypeError: encrypted without a passphrase, or a passphrase for a plain key
        raise BadCertificate(f"private key: cannot read it ({exc})") from exc


def _public(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(*_SPKI)


def _unencrypted(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def peer_name(cert: x509.Certificate) -> str:
    """The first DNS name of the certificate, else its first IP address, else its CN;
    a wildcard's `*` becomes a concrete label."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names = [*san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names:
        raise BadCertificate("the certificate names no DNS name, IP address or common name")
    first = names[0]
    if first.startswith("*."):
        return _WILDCARD_LABEL + first[1:]
    return _bracketless(first)


def _bracketless(name: str) -> str:
    """An IPv6 address as gRPC compares it (no brackets)."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name
