"""`python -m mmesh.router`: the router (`mm` container) of one runtime pod."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop
from pydantic import ValidationError

from mmesh.core.logs import setup_logging
from mmesh.core.redaction import settings_error_text
from mmesh.router.app import serve
from mmesh.router.heap import MMAP_THRESHOLD_BYTES, keep_payload_buffers
from mmesh.router.settings import MIB, RouterSettings


def main() -> None:
    try:
        settings = RouterSettings()  # type: ignore[call-arg]  # fields come from the env
        settings.resolved_instance_id  # noqa: B018 - fail fast on a missing instance id
    except ValidationError as exc:  # its text would repeat KV_STORE, password and all
        sys.exit(f"mmesh router: bad configuration:\n{settings_error_text(exc)}")
    except ValueError as exc:
        sys.exit(f"mmesh router: bad configuration:\n{exc}")
    setup_logging(settings.log_level, json_format=settings.log_json)
    if settings.keep_payload_buffers:
        tune_heap()
    if settings.event_loop == "uvloop":
        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))


def tune_heap() -> None:
    logger = logging.getLogger("mmesh.router")
    why_not = keep_payload_buffers()
    if why_not is None:
        logger.info(
            "payload buffers up to %d MiB reuse freed heap memory (MM_KEEP_PAYLOAD_BUFFERS)",
            MMAP_THRESHOLD_BYTES // MIB,
        )
    else:
        logger.warning("payload buffers come from fresh pages: %s", why_not)


if __name__ == "__main__":
    main()
