"""LimitSettings: the router's abuse limits that RouterSettings does not (yet) carry.

Read from the `mm` container's environment like RouterSettings. Kept apart only until
RouterSettings gains the field and the composition root passes the limiter down; then
this module goes.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    max_inflight_per_model: int = Field(0, ge=0, alias="MM_MAX_INFLIGHT_PER_MODEL")
    """Requests one model may have in flight through this router at once; more are refused
    with RESOURCE_EXHAUSTED (gRPC) / 429 (REST). 0 = unbounded, as in ModelMesh, whose
    router queues every request: a bound is a policy for the operator of the mesh to set
    (a few times the expected per-model concurrency), not something to surprise a
    migrating user with."""
