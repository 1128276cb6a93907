"""I/O: the router's TLS files, reloaded when they change, and what is served with them.

`CertFiles` reads the files of a `TlsPolicy` and, each time it is asked, compares their
stat signature (inode, size, mtime; a Kubernetes secret volume swaps a symlink, which
changes all three) with the one it last loaded. A change reloads and checks the material
(`CertBundle.of`); material that fails the check is logged once and the previous
certificate keeps serving. Each consumer asks on every new connection, so a rotated
certificate is used without a restart:

- gRPC ports: `server_credentials`, a dynamic certificate configuration whose fetcher gRPC
  calls on every handshake;
- aiohttp sites (REST, metrics): `ServerContext`, whose SNI callback (OpenSSL runs it on
  every ClientHello, with or without a server name) moves the connection to a context
  built from the newest files;
- peer channels: `PeerCredentials`, which hands out new channel credentials after a change
  (looked at no more than once a second) so `PeerPool` opens new channels with them.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from mmesh.router.tls import BadCertificate, CertBundle, ClientAuth, TlsPolicy

logger = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int, int] | tuple[str], ...]

PEER_CHECK_INTERVAL_S = 1.0
"""How often the peer channels look for rotated files."""


def _signature(paths: tuple[str, ...]) -> Signature:
    """What changes when a file is replaced; a missing file counts as a state too."""
    parts: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            parts.append((path,))
            continue
        parts.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(parts)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadCertificate(f"{what} {path}: {exc.strerror or exc}") from exc


def _read_trust(paths: tuple[str, ...]) -> list[bytes]:
    """The trust files that exist; a listed one that doesn't is skipped with a warning
    (the operator lists ca.crt, which a TLS secret may not have)."""
    found: list[bytes] = []
    for path in paths:
        if not Path(path).exists():
            logger.warning("TLS trust file %s does not exist; skipped", path)
            continue
        found.append(_read(path, "TLS trust file"))
    if not found:
        raise BadCertificate(f"none of the TLS trust files exists: {', '.join(paths)}")
    return found


def load_bundle(policy: TlsPolicy) -> CertBundle:
    """Read and check the policy's files; BadCertificate names the file at fault."""
    chain = _read(policy.cert_path, "TLS certificate")
    key = _read(policy.key_path, "TLS private key")
    trust = _read_trust(policy.verify_paths)
    try:
        return CertBundle.of(chain, key, trust, passphrase=policy.key_passphrase)
    except BadCertificate as exc:
        raise BadCertificate(f"{policy.cert_path} / {policy.key_path}: {exc}") from exc


class CertFiles:
    """The TLS material, reloaded whenever a file changed since the last look."""

    def __init__(self, policy: TlsPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()  # gRPC's fetcher runs on gRPC's own threads
        self._signature = _signature(policy.watched_paths)
        self._bundle = load_bundle(policy)
        self._generation = 1
        self._refused: Signature | None = None
        logger.info("TLS on: certificate serial %x, peers verified as %s", *self._facts())

    def _facts(self) -> tuple[int, str]:
        return self._bundle.serial, self._bundle.peer_name

    def current(self) -> tuple[int, CertBundle]:
        """(generation, material); the generation grows by one per successful reload."""
        with self._lock:
            signature = _signature(self.policy.watched_paths)
            if signature not in (self._signature, self._refused):
                self._reload(signature)
            return self._generation, self._bundle

    def _reload(self, signature: Signature) -> None:
        try:
            bundle = load_bundle(self.policy)
        except BadCertificate as exc:
            self._refused = signature
            logger.warning(
                "TLS files changed but cannot be used (%s); still serving serial %x",
                exc,
                self._bundle.serial,
            )
            return
        self._signature, self._bundle, self._refused = signature, bundle, None
        self._generation += 1
        logger.info("TLS certificate reloaded: serial %x", bundle.serial)


# ---------------------------------------------------------------- gRPC servers


def _server_config(bundle: CertBundle, *, verify: bool) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(bundle.key, bundle.chain)], root_certificates=bundle.trust if verify else None
    )


def server_credentials(files: CertFiles, *, client_auth: ClientAuth) -> grpc.ServerCredentials:
    """Credentials for one gRPC port. REQUIRE: clients must present a certificate the
    trust files vouch for; OPTIONAL and NONE: no client certificate is asked for."""
    verify = client_auth is ClientAuth.REQUIRE
    seen, bundle = files.current()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal seen
        generation, latest = files.current()
        if generation == seen:
            return None  # unchanged: gRPC keeps the configuration it has
        seen = generation
        return _server_config(latest, verify=verify)

    return grpc.dynamic_ssl_server_credentials(
        _server_config(bundle, verify=verify),
        fetch,  # type: ignore[arg-type]  # grpc-stubs: None (= unchanged) is allowed
        require_client_authentication=verify,
    )


# ---------------------------------------------------------------- aiohttp sites

_VERIFY_MODES = {
    ClientAuth.NONE: ssl.CERT_NONE,
    ClientAuth.OPTIONAL: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRE: ssl.CERT_REQUIRED,
}


class ServerContext:
    """An SSLContext for an aiohttp site that follows the files (see the module doc)."""

    def __init__(self, files: CertFiles, *, client_auth: ClientAuth) -> None:
        self._files = files
        self._client_auth = client_auth
        self._generation, bundle = files.current()
        self._latest = self._build(bundle)
        self.context = self._build(bundle)
        """Give this one to the site; connections move to the newest context."""
        self.context.sni_callback = self._on_hello

    def _build(self, bundle: CertBundle) -> ssl.SSLContext:
        policy = self._files.policy
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(policy.cert_path, policy.key_path, password=policy.key_passphrase)
        context.verify_mode = _VERIFY_MODES[self._client_auth]
        if self._client_auth is not ClientAuth.NONE:
            context.load_verify_locations(cadata=bundle.trust.decode("ascii", "replace"))
        return context

    def _on_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _: ssl.SSLContext
    ) -> None:
        generation, bundle = self._files.current()
        if generation != self._generation:
            try:
                self._latest = self._build(bundle)
            except (ssl.SSLError, OSError) as exc:  # files moved on again mid-read: next time
                logger.warning("TLS context not rebuilt: %s", exc)
            else:
                self._generation = generation
        connection.context = self._latest


# ---------------------------------------------------------------- peer channels


@dataclass(frozen=True, slots=True)
class PeerTls:
    """What a channel to a peer router is opened with."""

    generation: int
    credentials: grpc.ChannelCredentials
    options: tuple[tuple[str, str], ...]


def _peer_tls(generation: int, bundle: CertBundle) -> PeerTls:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=bundle.trust, private_key=bundle.key, certificate_chain=bundle.chain
    )
    # Peers are dialled by IP; their certificate (the shared pod certificate) names the
    # Service, so it is checked against that name.
    return PeerTls(generation, credentials, (("grpc.ssl_target_name_override", bundle.peer_name),))


class PeerCredentials:
    """Mutual-TLS credentials for peer channels, renewed after the files change."""

    def __init__(self, files: CertFiles, *, check_interval_s: float = PEER_CHECK_INTERVAL_S):
        self._files = files
        self._interval = check_interval_s
        self._checked = time.monotonic()
        self._tls = _peer_tls(*files.current())

    def current(self) -> PeerTls:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            generation, bundle = self._files.current()
            if generation != self._tls.generation:
                self._tls = _peer_tls(generation, bundle)
        return self._tls
