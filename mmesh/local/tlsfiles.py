"""Certificates for a local cluster run with TLS: a throwaway CA, the serving certificate the
runtime pods share (their Secret), and a client certificate for grpcurl / curl."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "tls.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,  # the reference wants PKCS8 keys
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(tz=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def write_tls_files(folder: Path, namespace: str, service: str) -> TlsFiles:
    """A CA, a serving certificate for the Service, `localhost` and every loopback address
    (pods have their own 127.x.y.z), and a client certificate, as PEM files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _builder("mmesh local CA", _name("mmesh local CA"), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [
        x509.DNSName(f"{service}.{namespace}.svc"),
        x509.DNSName(service),
        x509.DNSName(f"{service}.{namespace}"),
        x509.DNSName(f"{service}.{namespace}.svc.cluster.local"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    _issue(files.server_cert, files.server_key, service, ca_cert, ca_key, names, server=True)
    _issue(files.client_cert, files.client_key, "mmesh local client", ca_cert, ca_key, [], False)
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def _issue(
    cert_path: Path,
    key_path: Path,
    subject: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[x509.GeneralName],
    server: bool,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:  # pods present it to each other too: pod-to-pod is mutual TLS
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage(usages), critical=False
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
