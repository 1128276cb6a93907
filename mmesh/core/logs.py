"""I/O: logging setup shared by every `__main__` (router, adapter, operator, local).

`setup_logging(level, json_format=...)` configures the root logger once:
plain `%(asctime)s %(levelname)s %(name)s %(message)s` lines for people at a
terminal, or one JSON object per line for log collectors in a cluster.
Modules never configure logging themselves; they only
`logging.getLogger(__name__)` and pass structured fields with
`extra={"model_id": ...}`, which the JSON format emits as top-level keys.

The storage and HTTP client libraries log every request's URL and headers below
WARNING, credentials included (S3 `Authorization`, a `user:password@` endpoint), so their
loggers stay at WARNING whatever level mmesh itself logs at.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER_NAME = "mmesh"

QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "requests", "azure", "google")
"""Loggers held at WARNING: below it they print request URLs and headers (secrets)."""

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record: time, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an unserialisable extra must not lose the whole line
        return json.dumps(out, default=str, ensure_ascii=False)


def parse_level(level: str) -> int:
    """ "debug", "INFO", "Warning", ... -> the logging level number."""
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        names = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"unknown log level {level!r}; use one of {names}")
    return number


def setup_logging(level: str, *, json_format: bool, stream: TextIO | None = None) -> None:
    """Send every log record at `level` or above to stderr (or `stream`).

    Replaces the handler an earlier call installed, so calling it twice does
    not duplicate lines; handlers installed by others (pytest) are left alone.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
