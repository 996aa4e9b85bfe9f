"""/metrics (Prometheus text) and /healthz over HTTP, from a background thread."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)


def serve(host: str, port: int, metrics: Metrics, health: Callable[[], dict[str, object]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                body, ctype, code = metrics.render().encode(), "text/plain; version=0.0.4", 200
            elif self.path.startswith("/healthz"):
                h = health()
                body, ctype, code = json.dumps(h).encode(), "application/json", 200 if h.get("ok") else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("http " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
