"""The runtime probe against a real MLServer: a model the server does not have is seen as
gone (MLServer 1.x answers ModelReady for it with UNKNOWN, not NOT_FOUND), so a router whose
model server restarted empty drops its claims with no request sent."""

from __future__ import annotations

import pytest

from mmesh.core.proto import grpc_predict_v2_pb2 as v2
from mmesh.router.errors import Passthrough, RouterError, RuntimeUnavailable
from mmesh.router.forwarding import Forwarder
from mmesh.router.healer import MODEL_READY, says_unknown_model
from tests.fixtures.mlserver import MLServerProc

pytestmark = pytest.mark.mlserver


async def test_mlserver_model_ready_for_a_model_it_lacks_says_unknown_model(
    mlserver: MLServerProc,
) -> None:
    forwarder = Forwarder(mlserver.grpc_target, max_message_bytes=1 << 20)
    request = v2.ModelReadyRequest(name="never-loaded__isvc-0").SerializeToString()
    try:
        with pytest.raises(RouterError) as caught:
            await forwarder.call(MODEL_READY, request, (), 5.0)
    finally:
        await forwarder.close()
    assert says_unknown_model(caught.value), repr(caught.value)


def test_down_or_other_errors_say_nothing() -> None:
    assert not says_unknown_model(RuntimeUnavailable("model server at x unavailable"))
    assert not says_unknown_model(Passthrough("INTERNAL", "out of memory"))
