"""deploy/grafana/streamvae-dashboard.json: an importable Grafana dashboard whose every
PromQL expression names only metrics the daemon exports. The exported names come from
the code (a daemon's ``Metrics`` registry, each family with its sample suffixes), not
from a list kept by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from streamvae.service.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "streamvae-dashboard.json"
METRIC = re.compile(r"\bstreamvae_[a-zA-Z0-9_]+")


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    d: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return d


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row holds its panels


def expressions(d: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            yield f"variable {v['name']}", q["query"] if isinstance(q, dict) else q


def test_it_is_a_dashboard_grafana_imports(dash: dict[str, Any]) -> None:
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels(dash):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_every_metric_in_every_expression_is_one_the_daemon_exports(dash: dict[str, Any]) -> None:
    exported = Metrics().names()
    used: set[str] = set()
    for where, expr in expressions(dash):
        names = set(METRIC.findall(expr))
        assert names, f"{where}: no streamvae metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported by the daemon (it exports {sorted(exported)})"
        if "histogram_quantile(" in expr:
            assert all(n.endswith("_bucket") for n in names), f"{where}: histogram_quantile over {expr!r}"
        used |= names
    # the panels issue 18 asks for
    assert {"streamvae_records_total", "streamvae_windows_scored_total", "streamvae_alerts_total",
            "streamvae_dead_letters_total", "streamvae_batch_duration_seconds_bucket",
            "streamvae_score_latency_seconds_bucket", "streamvae_consumer_lag_records", "streamvae_live_entities",
            "streamvae_open_episodes", "streamvae_entity_threshold", "streamvae_model_info",
            "streamvae_retrains_total"} <= used


def test_exported_names_are_sample_names_not_family_names() -> None:
    exported = Metrics().names()
    assert "streamvae_records_total" in exported and "streamvae_records" not in exported
    assert "streamvae_batch_duration_seconds_bucket" in exported and "streamvae_batch_duration_seconds" not in exported
