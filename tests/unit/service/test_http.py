"""/metrics, /healthz and /readyz from a real HTTP server on a free port, without a broker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from streamvae.service.http import serve
from streamvae.service.metrics import Metrics


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def served() -> Iterator[tuple[int, Metrics, dict[str, Any], dict[str, Any]]]:
    m, health, ready = Metrics(), {"ok": True, "loop": "running"}, {"ready": False, "checks": {}}
    server = serve("127.0.0.1", 0, m, lambda: dict(health), lambda: dict(ready))
    try:
        yield int(server.server_address[1]), m, health, ready
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_in_the_prometheus_text_format(served: tuple[int, Metrics, dict[str, Any], dict[str, Any]]) -> None:
    port, m, _, _ = served
    m.alerts.labels(kind="open").inc(3)
    m.batch_duration.observe(0.2)
    code, ctype, body = get(port, "/metrics")
    assert code == 200 and ctype == CONTENT_TYPE_PLAIN_0_0_4
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert [s.value for s in fams["streamvae_alerts"].samples] == [3.0]
    assert any(s.name == "streamvae_batch_duration_seconds_bucket" for s in fams["streamvae_batch_duration_seconds"].samples)


def test_probes_answer_200_or_503_with_their_json(served: tuple[int, Metrics, dict[str, Any], dict[str, Any]]) -> None:
    port, _, health, ready = served
    code, ctype, body = get(port, "/healthz")
    assert (code, ctype, json.loads(body)) == (200, "application/json", health)
    code, _, body = get(port, "/readyz?verbose=1")  # a query string is not part of the path
    assert code == 503 and json.loads(body) == ready
    ready["ready"], health["ok"] = True, False
    assert get(port, "/readyz")[0] == 200 and get(port, "/healthz")[0] == 503
    assert get(port, "/nothing")[0] == 404
