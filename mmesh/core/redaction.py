"""Pure: keep credentials out of log lines and error messages.

Storage-config entries (S3 keys, Azure connection strings, GCS private keys, HTTP
headers), etcd passwords and URLs with a user:password or a signed query carry secrets.
The records that hold them keep those fields out of `repr` (`StorageSpec`,
`EtcdConnection`); this module is the second line: it finds the secret values in a
parsed config document and masks every occurrence of them in a text before the text is
logged or sent to a client, whatever library produced it.

    secret_values(doc)          every secret string a config document holds
    scrub(text, secrets)        `text` with each of those replaced by MASK
    settings_error_text(exc)    a pydantic ValidationError without the input values

Callers: the adapter's puller (every storage error), the processes' `__main__`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from pydantic import ValidationError

MASK = "***"

MIN_SECRET_CHARS = 4
"""Shorter values are not masked: replacing every 'ab' in a message would garble it and a
secret that short protects nothing anyway."""

_MIN_QUERY_VALUE_CHARS = 8
"""Query values this long are masked on their own too (signatures, tokens); shorter ones
(`version=1`, `download=true`) are masked only as part of the whole query."""

_SECRET_NAME = re.compile(
    r"secret|passw|passphrase|token|credential|private|connection_?string|access_?key"
    r"|account_?key|api_?key|client_?key|auth|signature|sas|cookie|headers",
    re.IGNORECASE,
)
"""Field names whose string values (at any depth below them) are secret. `headers` is
here because HTTP storage headers carry bearer tokens and API keys under any name."""


def is_secret_name(name: str) -> bool:
    """Whether a config field called `name` holds a secret (`secret_access_key`,
    `password`, `connection_string`, `headers`, ...)."""
    return _SECRET_NAME.search(name) is not None


def secret_values(doc: object) -> frozenset[str]:
    """Every secret string in a parsed JSON-like document.

    That is each string below a secret-named field, and the password and query of every
    URL-shaped string anywhere (a pre-signed URL or `https://user:pw@host` is secret
    wherever it sits).
    """
    found: set[str] = set()
    _collect(doc, secret=False, found=found)
    return frozenset(s for s in found if len(s) >= MIN_SECRET_CHARS)


def _collect(value: object, *, secret: bool, found: set[str]) -> None:
    if isinstance(value, str):
        found.update(url_secrets(value))
        if secret:
            found.add(value)
            found.update(_pair_secrets(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, secret=secret or is_secret_name(str(key)), found=found)
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        for item in value:
            _collect(item, secret=secret, found=found)


def _pair_secrets(text: str) -> set[str]:
    """The secret parts of a `Name=value;Name2=value2` string (an Azure connection string:
    `AccountKey`, `SharedAccessSignature`), which a library may quote on their own."""
    found = set()
    for pair in text.split(";"):
        name, sep, value = pair.partition("=")
        if sep and value and is_secret_name(name):
            found.add(value.strip())
    return found


# scheme://[user[:password]@]rest[?query], wherever it occurs in a value (etcd endpoints
# are a comma-separated list of URLs; Azure connection strings end a URL with ';').
_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@:\s,]*(?::(?P<password>[^/?#@\s,]*))?@)?"
    r"[^?#\s,;]*(?:\?(?P<query>[^#\s,;]*))?"
)


def url_secrets(text: str) -> set[str]:
    """The passwords, query strings and long query values of the URLs in `text`
    (pre-signed and SAS URLs carry their signature in the query)."""
    found: set[str] = set()
    for match in _URL.finditer(text):
        if match["password"]:
            found.add(match["password"])
        query = match["query"]
        if not query:
            continue
        found.add(query)
        for param in query.split("&"):
            value = param.partition("=")[2]
            if len(value) >= _MIN_QUERY_VALUE_CHARS:
                found.add(value)
    return found


def scrub(text: str, secrets: Collection[str]) -> str:
    """`text` with every occurrence of every secret replaced by MASK (longest first, so
    a secret that contains another is masked whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, MASK)
    return text


def settings_error_text(exc: ValidationError) -> str:
    """One line per problem, `NAME: message`, never the offending value: an environment
    variable such as KV_STORE may hold an etcd password, and pydantic's own text repeats
    the input (and for some errors every variable read)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
