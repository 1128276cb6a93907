"""`python -m mmesh.operator`: the operator (kopf, cluster-wide, standalone).

kopf watches every namespace (`-A`); the handlers filter to the managed namespaces
themselves (NAMESPACE, plus those labelled `modelmesh-enabled: "true"` in cluster scope).
Standalone as far as kopf is concerned (no peering resources): replicas elect a leader on
an etcd lease instead (mmesh.operator.leadership), and only the leader writes.
"""

from __future__ import annotations

import sys

import kopf
from pydantic import ValidationError

from mmesh.core.logs import setup_logging
from mmesh.core.redaction import settings_error_text
from mmesh.operator import handlers
from mmesh.operator.settings import OperatorSettings


def main() -> None:
    try:
        settings = OperatorSettings()  # type: ignore[call-arg]  # fields come from the env
        settings.etcd_connection()  # fail fast on a bad ETCD_CONNECTION
    except ValidationError as exc:  # pydantic's own text repeats the values, passwords included
        sys.exit(f"mmesh operator: bad configuration:\n{settings_error_text(exc)}")
    except (ValueError, OSError) as exc:
        sys.exit(f"mmesh operator: bad configuration:\n{exc}")
    setup_logging(settings.log_level, json_format=settings.log_json)
    liveness = None
    if settings.health_port:
        liveness = f"http://{settings.health_host}:{settings.health_port}/healthz"
    assert handlers.__all__  # imported for its side effect: the handlers are registered
    kopf.run(
        clusterwide=True,
        standalone=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()
