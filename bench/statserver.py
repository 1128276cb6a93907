"""The JSON stats endpoint of the router hooks (decode_hook.py, pause_hook.py).

Stdlib only: the benchmark copies this file next to the hooks into the temp dir it puts
on a router's PYTHONPATH (harness.install_hooks), so it runs inside the router process.
One idle daemon thread on 127.0.0.1 answers every GET with a snapshot as JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


def serve_json(port: int, snapshot: Callable[[], Any], thread_name: str) -> None:
    """Serve `snapshot()` as JSON on 127.0.0.1:`port` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name=thread_name, daemon=True).start()
