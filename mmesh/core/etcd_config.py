"""Pure: parse the etcd connection settings the operator keeps in a Secret.

The Secret's `etcd_connection` entry is JSON (modelmesh-serving's format):
`endpoints` ("http://h:p,h2:p2" or a list), `root_prefix`, `userid`,
`password`, `certificate` (CA PEM text) or `certificate_file`, and optional
`client_certificate` / `client_key` (PEM text) for mutual TLS. The result is a
frozen `EtcdConnection` that `mmesh.core.etcd.EtcdKV.connect` consumes; the
root prefix is applied by `records.KeyLayout`, not by the KV store. Secrets
stay out of `repr`. Callers: the router's and operator's settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PORT = 2379
_SCHEMES = ("http://", "https://")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One etcd client endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class EtcdConnection:
    """How to reach etcd: endpoints, credentials and TLS material."""

    endpoints: tuple[Endpoint, ...]
    """Tried in order; the first that answers is used."""
    root_prefix: str = ""
    """Prefix for every mmesh key (see records.KeyLayout)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    """Use TLS: any endpoint said https://, or a CA certificate was given."""
    ca_certificate: str | None = field(default=None, repr=False)
    """PEM text of the CA that signed the server certificate."""
    ca_certificate_file: str | None = None
    """Path of that PEM file, read when connecting."""
    client_certificate: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)

    @property
    def endpoint_text(self) -> str:
        """Endpoints as "h:p,h2:p2", for messages."""
        return ",".join(str(e) for e in self.endpoints)

    @classmethod
    def from_endpoint(cls, endpoint: str, *, root_prefix: str = "") -> EtcdConnection:
        """A plain connection to one "host:port" (or "http://host:port")."""
        return from_mapping({"endpoints": endpoint, "root_prefix": root_prefix})

    @classmethod
    def from_json(cls, text: str | bytes) -> EtcdConnection:
        """Parse the Secret's `etcd_connection` JSON."""
        return from_json(text)


def from_json(text: str | bytes) -> EtcdConnection:
    """Parse the Secret's `etcd_connection` JSON; raise ValueError on bad input."""
    try:
        loaded = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"etcd_connection is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError("etcd_connection must be a JSON object")
    return from_mapping(loaded)


def from_mapping(raw: Mapping[str, object]) -> EtcdConnection:
    """Build an EtcdConnection from the decoded JSON object; unknown keys are ignored."""
    texts, schemes = _parse_endpoints(raw.get("endpoints"))
    username, password = _pair(raw, "userid", "password")
    client_cert, client_key = _pair(raw, "client_certificate", "client_key")
    ca_text = _opt_str(raw, "certificate")
    ca_file = _opt_str(raw, "certificate_file")
    if ca_text is not None and ca_file is not None:
        raise ValueError("etcd_connection: give 'certificate' or 'certificate_file', not both")
    tls = _decide_tls(schemes, has_ca=ca_text is not None or ca_file is not None)
    if client_cert is not None and not tls:
        raise ValueError("etcd_connection: a client certificate needs https:// endpoints")
    return EtcdConnection(
        endpoints=tuple(_parse_host_port(t) for t in texts),
        root_prefix=_opt_str(raw, "root_prefix") or "",
        username=username,
        password=password,
        tls=tls,
        ca_certificate=ca_text,
        ca_certificate_file=ca_file,
        client_certificate=client_cert,
        client_key=client_key,
    )


def _opt_str(raw: Mapping[str, object], name: str) -> str | None:
    """A string setting; absent, null and "" all mean "not set"."""
    value = raw.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"etcd_connection: {name!r} must be a string")
    return value


def _pair(raw: Mapping[str, object], first: str, second: str) -> tuple[str | None, str | None]:
    """Two settings that only make sense together."""
    a, b = _opt_str(raw, first), _opt_str(raw, second)
    if (a is None) != (b is None):
        raise ValueError(f"etcd_connection: {first!r} and {second!r} must be given together")
    return a, b


def _parse_endpoints(value: object) -> tuple[list[str], set[str]]:
    """Endpoint texts without their scheme, and the set of schemes that were written."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [str(v) for v in value]
    else:
        raise ValueError("etcd_connection: 'endpoints' must be a string or a list of strings")
    texts: list[str] = []
    schemes: set[str] = set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        scheme = next((s for s in _SCHEMES if item.lower().startswith(s)), "")
        if not scheme and "://" in item:
            raise ValueError(f"etcd_connection: endpoint {item!r}: only http:// and https://")
        schemes.add(scheme)
        texts.append(item[len(scheme) :].rstrip("/"))
    if not texts:
        raise ValueError("etcd_connection: 'endpoints' is empty")
    return texts, schemes


def _decide_tls(schemes: set[str], *, has_ca: bool) -> bool:
    if "http://" in schemes and "https://" in schemes:
        raise ValueError("etcd_connection: endpoints mix http:// and https://")
    if "http://" in schemes and has_ca:
        raise ValueError("etcd_connection: a certificate is given but endpoints use http://")
    return "https://" in schemes or has_ca


def _parse_host_port(text: str) -> Endpoint:
    """ "h", "h:p", "[v6]" or "[v6]:p" -> Endpoint (port defaults to 2379)."""
    if "/" in text:
        raise ValueError(f"etcd_connection: endpoint {text!r} must be host:port, without a path")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"etcd_connection: bad IPv6 endpoint {text!r}")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"etcd_connection: endpoint {text!r} has no host")
    return Endpoint(host, _parse_port(text, port_text))


def _parse_port(text: str, port_text: str) -> int:
    if not port_text:
        return DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"etcd_connection: endpoint {text!r} has a bad port {port_text!r}")
    return int(port_text)
