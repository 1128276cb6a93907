"""`python -m mmesh.adapter`: the runtime adapter (ModelRuntime on ADAPTER_PORT, 8085)."""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError

from mmesh.adapter.app import serve
from mmesh.adapter.settings import AdapterSettings
from mmesh.core.logs import setup_logging
from mmesh.core.redaction import settings_error_text


def main() -> None:
    try:
        settings = AdapterSettings()  # type: ignore[call-arg]  # fields come from the env
    except ValidationError as exc:
        sys.exit(f"mmesh adapter: bad configuration:\n{settings_error_text(exc)}")
    setup_logging(settings.log_level, json_format=settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
