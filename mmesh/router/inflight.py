"""Pure: how many requests each model has in flight through this router, and whether one
more may enter.

A bound per model keeps one hot or abused model from holding every buffer and task of
the router (each waiting request holds its payload, up to MM_SVC_GRPC_MAX_MSG_SIZE) while,
say, its copy loads; other models keep being served. Only requests that enter the mesh
here are counted: a request a peer forwards was counted by the router it entered.

    limiter = InflightLimiter(limit)      0 = unbounded (the default: ModelMesh has no bound)
    if limiter.try_enter(model_id):  ...  finally: limiter.leave(model_id)

Callers: `inference.InferenceRouter.invoke` (every gRPC and REST inference call).
"""

from __future__ import annotations

UNBOUNDED = 0


class InflightLimiter:
    """Per-model counters of admitted requests, capped at `limit` each (0: no cap)."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int = UNBOUNDED) -> None:
        if limit < 0:
            raise ValueError(f"the in-flight limit must be 0 (unbounded) or more, got {limit}")
        self.limit = limit
        self._counts: dict[str, int] = {}

    @property
    def bounded(self) -> bool:
        return self.limit != UNBOUNDED

    def try_enter(self, model_id: str) -> bool:
        """Count one more request for `model_id`; False (and nothing counted) when the
        model already has `limit` in flight."""
        count = self._counts.get(model_id, 0)
        if self.bounded and count >= self.limit:
            return False
        self._counts[model_id] = count + 1
        return True

    def leave(self, model_id: str) -> None:
        """One admitted request for `model_id` finished, however it ended."""
        count = self._counts.get(model_id, 0) - 1
        if count > 0:
            self._counts[model_id] = count
        else:
            self._counts.pop(model_id, None)

    def in_flight(self, model_id: str) -> int:
        return self._counts.get(model_id, 0)
