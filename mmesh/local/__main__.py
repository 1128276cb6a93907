"""`python -m mmesh.local`: a whole ModelMesh cluster on this machine, no Docker needed.

Starts etcd, the emulated Kubernetes API, an S3 server with the sample models, the operator,
the pod runner and the port-forward, prints what to run next, and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mmesh.local.cluster import ClusterConfig, Endpoints, LocalCluster, Say

NEXT_STEPS = """
The local cluster is up. In another terminal:

  export KUBECONFIG={kubeconfig}
  kubectl get servingruntimes
  kubectl apply -f examples/tutorial-isvc.yaml      # the tutorial's InferenceService
  kubectl get isvc                                  # READY True once a runtime pod is up
  grpcurl -plaintext -proto fvt/proto/kfs_inference_v2.proto -d @ {grpc} \\
      inference.GRPCInferenceService.ModelInfer < examples/tutorial-request.json
  curl -X POST http://{rest}/v2/models/example-sklearn-isvc/infer \\
      -d @examples/tutorial-rest-request.json

Service modelmesh-serving is already forwarded: gRPC {grpc}, REST {rest} (no kubectl
port-forward needed). Pod logs: kubectl logs <pod> -c mm. Ctrl-C stops everything.
Fault drills: curl -X POST http://{control}/etcd/kill (then /etcd/start), /operator/kill,
/pods/<pod>/containers/<container>/kill; curl http://{control}/processes lists the pids.
"""


TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"
KUBECTL_HINT = """kubectl is not on PATH; scripts/setup installs it into {tools}:

  export PATH="$PATH:{tools}"
"""


def _kubectl_hint() -> str:
    return "" if shutil.which("kubectl") else KUBECTL_HINT.format(tools=TOOLS_BIN)


TLS_STEPS = """With TLS on, use the CA (and, with --client-auth, the client certificate):

  grpcurl -cacert {tls_dir}/ca.crt -cert {tls_dir}/client.crt -key {tls_dir}/client.key \\
      -proto fvt/proto/kfs_inference_v2.proto -d @ {grpc} \\
      inference.GRPCInferenceService.ModelInfer < examples/tutorial-request.json
  curl --cacert {tls_dir}/ca.crt --cert {tls_dir}/client.crt --key {tls_dir}/client.key \\
      https://{rest}/v2/models/example-sklearn-isvc/infer -d @examples/tutorial-rest-request.json
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mmesh.local", description=__doc__)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="state and logs (default: a new temporary folder)",
    )
    parser.add_argument("--namespace", default="modelmesh-serving")
    parser.add_argument("--grpc-port", type=int, default=8033, help="0: any free port")
    parser.add_argument("--rest-port", type=int, default=8008, help="0: any free port")
    parser.add_argument("--api-port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--pod-block",
        default="127.0.10",
        help="pods get <block>.2, <block>.3, ... (a /24 in 127.0.0.0/8)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write the endpoints as JSON here once the cluster is up",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve gRPC, REST and pod-to-pod traffic over TLS (throwaway CA)",
    )
    parser.add_argument(
        "--client-auth",
        choices=["optional", "require"],
        default="",
        help="with --tls: ask clients for a certificate",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if not args.pod_block.startswith("127.") or args.pod_block.count(".") != 2:
        parser.error("--pod-block must look like 127.X.Y (loopback only)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmesh-local."))
    if workdir.exists() and args.workdir is not None:
        shutil.rmtree(workdir)  # a fresh cluster: the API keeps nothing across runs either
    config = ClusterConfig(
        workdir=workdir,
        namespace=args.namespace,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        api_port=args.api_port,
        pod_block=args.pod_block,
        tls=args.tls or bool(args.client_auth),
        client_auth=args.client_auth,
    )

    def say(line: str) -> None:
        if not args.quiet:
            print(f"[local] {line}", flush=True)

    def ready(endpoints: Endpoints) -> None:
        if args.ready_file is not None:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(endpoints.to_json())
            os.replace(tmp, args.ready_file)
        say(f"workdir {endpoints.workdir} (logs in logs/ and pods/<pod>/logs/)")
        if not args.quiet:
            print(NEXT_STEPS.format(**endpoints.__dict__) + _kubectl_hint(), flush=True)
            if endpoints.tls_dir:
                print(TLS_STEPS.format(**endpoints.__dict__), flush=True)

    try:
        asyncio.run(_run(config, say, ready))
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"[local] failed to start: {exc}", file=sys.stderr)
        sys.exit(1)


async def _run(config: ClusterConfig, say: Say, ready: Callable[[Endpoints], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await LocalCluster(config, say).run(stop, ready)


if __name__ == "__main__":
    main()
