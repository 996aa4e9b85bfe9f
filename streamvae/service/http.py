"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, from a background thread.

- ``/metrics``: the daemon's registry in the Prometheus text format 0.0.4
  (prometheus-client's ``generate_latest``, with the content type its own HTTP handler
  sends for it; its ``CONTENT_TYPE_LATEST`` names format 1.0.0, for scrapers that ask
  for UTF-8 names: every name here is a classic one). streamvae/service/metrics.py
  names what is there;
- ``/healthz``: alive, 200 or 503, a JSON body (streamvae/service/ready.py says when);
- ``/readyz``: ready, 200 or 503, a JSON body with each condition and why it fails.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)

Probe = Callable[[], dict[str, object]]


def serve(host: str, port: int, metrics: Metrics, health: Probe, ready: Probe) -> ThreadingHTTPServer:
    """Serve on ``host:port`` (0: any free port; ``server.server_address`` says which)
    until ``server.shutdown()``. ``health()`` answers with ``ok``, ``ready()`` with
    ``ready``: 200 when true, else 503."""

    def probe(fn: Probe, key: str) -> tuple[bytes, str, int]:
        body = fn()
        return json.dumps(body).encode(), "application/json", 200 if body.get(key) else 503

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_PLAIN_0_0_4, 200
            elif path == "/healthz":
                body, ctype, code = probe(health, "ok")
            elif path == "/readyz":
                body, ctype, code = probe(ready, "ready")
            else:
                body, ctype, code = b"not found: /metrics, /healthz, /readyz\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("http " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, server.server_address[1])
    return server
