"""The Backend port: one model server behind the adapter (MLServer, Triton, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A model whose files are on local disk, ready to be handed to the server."""

    model_id: str
    model_format: str
    local_path: Path
    schema: dict[str, Any] | None = None


class Backend(Protocol):
    async def ready_version(self) -> str | None:
        """The server's version when it is ready to load models, None while it is not."""

    async def purge(self) -> None:
        """Unload every model the server holds and drop this backend's repository files."""

    async def load(self, model: PreparedModel) -> int | None:
        """Lay the model out for the server and load it; returns once it can serve, with
        the memory the server measured for it, or None to size it from its disk size."""

    async def unload(self, model_id: str) -> None:
        """Unload and drop the layout; a model the server does not know is not an error."""

    async def close(self) -> None: ...
