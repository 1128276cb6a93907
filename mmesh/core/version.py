"""The one version string of mmesh: the installed distribution's, reported by every process."""

from __future__ import annotations

import importlib.metadata


def _installed_version() -> str:
    try:
        return importlib.metadata.version("mmesh")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0.0.0+source"


VERSION = _installed_version()
