"""streamvae.testing.procs against real child processes: a stand-in daemon serving /healthz and
/metrics on its STREAMVAE_HTTP__PORT, and one that ignores SIGTERM."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streamvae.testing.procs import DaemonError, DaemonProc, cpu_seconds, memory_mb, parse_metrics, stop, write_config

METRICS = """# HELP streamvae_alerts_total Alerts published.
# TYPE streamvae_alerts_total counter
streamvae_alerts_total{kind="open"} 3.0
streamvae_alerts_total{kind="close"} 2.0
streamvae_retrain_running 1.0
streamvae_dead_letters_total{reason="not json"} 4.0
streamvae_build_info{version="x"} NaN
"""

# Serves METRICS and a /healthz JSON; prints a line to its log, then serves until SIGTERM.
STAND_IN = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"model_version": "v1"}).encode() if self.path == "/healthz" else sys.argv[1].encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
print("stand-in up", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["STREAMVAE_HTTP__PORT"])), H).serve_forever()
"""


def test_parse_metrics_keeps_labels_and_skips_comments() -> None:
    got = parse_metrics(METRICS)
    assert got['streamvae_alerts_total{kind="open"}'] == 3.0
    assert got['streamvae_dead_letters_total{reason="not json"}'] == 4.0  # a space inside a label
    assert not any(k.startswith("#") for k in got) and len(got) == 5


def test_parse_metrics_reads_prometheus_client_output_with_histograms() -> None:
    from prometheus_client import generate_latest

    from streamvae.service.metrics import Metrics

    m = Metrics()  # the daemon's own: a histogram, an info, labelled counters
    m.batch_records.observe(7)
    m.model.info({"version": "v1"})
    m.alerts.labels(kind="open").inc()
    m.dead_letters.labels(reason='say "hi"').inc()
    got = parse_metrics(generate_latest(m.registry).decode())
    assert got['streamvae_batch_records_bucket{le="10.0"}'] == 1.0 and got['streamvae_batch_records_bucket{le="+Inf"}'] == 1.0
    assert got["streamvae_batch_records_count"] == 1.0 and got["streamvae_batch_records_sum"] == 7.0
    assert got['streamvae_model_info{version="v1"}'] == 1.0 and got['streamvae_alerts_total{kind="open"}'] == 1.0
    assert got['streamvae_dead_letters_total{reason="say \\"hi\\""}'] == 1.0


def test_parse_metrics_leaves_created_timestamps_out() -> None:
    text = ("# TYPE streamvae_records counter\nstreamvae_records_total 5.0\nstreamvae_records_created 1.7e+09\n"
            'streamvae_batch_records_created{x="1"} 1.7e+09\n')
    assert parse_metrics(text) == {"streamvae_records_total": 5.0}


def test_write_config_is_toml(tmp_path: Path) -> None:
    p = write_config(tmp_path / "c.toml", {"kafka": {"bootstrap_servers": "h:1"}, "threshold": {"q": 1e-3, "kind": "spot"}})
    assert tomllib.loads(p.read_text()) == {"kafka": {"bootstrap_servers": "h:1"}, "threshold": {"q": 1e-3, "kind": "spot"}}


def test_a_daemon_process_ready_metrics_and_stop(tmp_path: Path) -> None:
    d = DaemonProc([sys.executable, "-c", STAND_IN, METRICS], tmp_path / "d.log")
    try:
        assert d.wait_ready(30.0) > 0
        assert d.healthz() == {"model_version": "v1"}
        assert d.metric("alerts_total") == 5.0 and d.metric("nothing_total") == 0.0
        assert d.metric_series("alerts_total") == {'kind="open"': 3.0, 'kind="close"': 2.0}
        assert d.metric_series("retrain_running") == {"": 1.0}
        assert d.totals()["alerts_total"] == 5.0
        assert d.cpu_seconds() >= 0.0
        assert d.stop(10.0) == -15  # SIGTERM: the stand-in has no handler
        assert "stand-in up" in d.log_tail()
        with pytest.raises(DaemonError, match="daemon exited with -15"):
            d.check_alive()
    finally:
        d.close()


def test_a_daemon_that_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    d = DaemonProc([sys.executable, "-c", "print('bad config'); raise SystemExit(2)"], tmp_path / "d.log")
    with pytest.raises(DaemonError, match="(?s)exited with 2.*bad config"):
        d.wait_ready(30.0)
    d.close()


def test_stop_kills_what_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    killed = []
    assert stop(p, 0.3, on_kill=lambda: killed.append(True)) == -9 and killed == [True]
    p.stdout.close()


def test_process_figures_from_proc() -> None:
    assert cpu_seconds(os.getpid()) > 0.0 and math.isnan(cpu_seconds(None))
    mem = memory_mb()
    assert 0.0 < mem["rss"] <= mem["peak"]
