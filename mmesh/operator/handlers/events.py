"""Kubernetes Events for the transitions a user wants to see in `kubectl get events`.

Posted through kopf's event queue (so they respect `POST_EVENTS` and never fail a
handler): InferenceService registered, model Loaded / FailedToLoad, invalid spec, runtime
Deployments scaled to zero or up, a rejected model-serving-config. Outside a kopf context
they are only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

logger = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

REGISTERED = "Registered"
LOADED = "Loaded"
FAILED_TO_LOAD = "FailedToLoad"
SCALED_TO_ZERO = "ScaledToZero"
SCALED_UP = "ScaledUp"
INVALID_CONFIG = "InvalidConfig"


def post(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    """Post one Event about `body` (an object with kind, apiVersion and metadata)."""
    try:
        kopf.event(dict(body), type=type, reason=reason, message=message)  # type: ignore[arg-type]
    except LookupError:  # no kopf context (e.g. a plain asyncio task of a test)
        logger.debug("not posting event %s: %s (no kopf context)", reason, message)
