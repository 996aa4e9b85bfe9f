"""/metrics scraped while a daemon works through a feed at full speed on the real broker,
then every count compared with what the topics hold.

The feed: four pumps, 800 readings each, a level shift on one (so episodes open and
close), and malformed records of four kinds among them (so dead letters exist). It is
sent in slices to a daemon already running; /metrics is scraped after each slice, so at
least one scrape comes while the daemon is part way through, and each must parse as the
Prometheus text format with whole histograms. At the end: records consumed = records
produced, dead letters by reason = the dead-letter topic by reason, alerts by kind = the
alerts topic by kind, windows scored = records on the scores topic, the lag of every
partition 0, and the model info names the version /healthz serves.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from prometheus_client.parser import text_string_to_metric_families

from harness import FEATURES, T0, WINDOW, DaemonProc, Env, series
from streamvae.testing.procs import parse_metrics


PUMPS = 4
N = 800
SHIFT = ("pump-1", 300, 40, 1, 3.0)  # entity, first reading, length, feature, shift
BAD: list[tuple[str, bytes, str]] = [  # key, value, reason; each sent BAD_EVERY readings apart
    ("pump-0", b"{not json", "not_json"),
    ("pump-2", b"[1, 2, 3]", "not_object"),
    ("pump-3", json.dumps({"entity": "pump-3", "values": {"a": 1.0}}).encode(), "missing_ts"),
    ("pump-0", json.dumps({"entity": "pump-0", "ts": "yesterday", "values": {"a": 1.0}}).encode(), "bad_ts"),
]
BAD_EVERY = 97
SLICES = 8
HISTOGRAMS = ("streamvae_batch_duration_seconds", "streamvae_score_latency_seconds", "streamvae_batch_records")


def feed() -> tuple[list[tuple[str, bytes]], Counter[str]]:
    """(key, value) of every record in sending order (readings in time order, bad ones
    among them), and the reasons of the bad ones."""
    data = {f"pump-{e}": series(N, seed=300 + e) for e in range(PUMPS)}
    ent, first, length, f, delta = SHIFT
    data[ent][first : first + length, f] += delta
    out: list[tuple[str, bytes]] = []
    reasons: Counter[str] = Counter()
    for i in range(N):
        for name, x in data.items():
            rec = {"entity": name, "ts": T0 + i, "values": {k: float(v) for k, v in zip(FEATURES, x[i])}}
            out.append((name, json.dumps(rec).encode()))
        if i % BAD_EVERY == BAD_EVERY - 1:
            key, value, reason = BAD[(i // BAD_EVERY) % len(BAD)]
            out.append((key, value))
            reasons[reason] += 1
    return out, reasons


def scrape(d: DaemonProc) -> dict[str, float]:
    """/metrics, checked: it parses as the text format, and every histogram has cumulative
    buckets ending in +Inf, which equals its _count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in HISTOGRAMS:
        fam = fams[name]
        assert fam.type == "histogram", (name, fam.type)
        buckets = [s for s in fam.samples if s.name == name + "_bucket"]
        counts = [s.value for s in buckets]
        assert len(buckets) >= 5 and buckets[-1].labels["le"] == "+Inf", buckets
        assert counts == sorted(counts), f"{name}: buckets not cumulative: {counts}"
        count = next(s.value for s in fam.samples if s.name == name + "_count")
        assert counts[-1] == count, (name, counts[-1], count)
    return parse_metrics(text)


def series_of(samples: dict[str, float], name: str) -> dict[str, float]:
    head = f"streamvae_{name}"
    return {k[len(head) + 1 : -1]: v for k, v in samples.items() if k.startswith(head + "{")} | (
        {"": samples[head]} if head in samples else {})


def test_metrics_scraped_mid_run_and_counts_match_the_topics(kenv: Env, model_dir: Path, tmp_path: Path,
                                                             daemons: list[DaemonProc]) -> None:
    scores = f"scores-{uuid.uuid4().hex[:8]}"
    d = DaemonProc(kenv.config(tmp_path, model_dir, topics__scores=scores), tmp_path / "daemon.log")
    daemons.append(d)
    records, bad = feed()
    total = len(records)
    step = -(-total // SLICES)
    seen: list[float] = []  # records_total at each scrape
    for k in range(0, total, step):
        for key, value in records[k : k + step]:
            kenv.send(key, value)
        kenv.flush()
        m = scrape(d)
        if k == 0:  # the daemon has started on the feed before the rest is sent
            deadline = time.monotonic() + 60
            while m.get("streamvae_records_total", 0.0) == 0.0:
                assert time.monotonic() < deadline, f"no record consumed in 60 s\n{d.log_tail()}"
                time.sleep(0.05)
                m = scrape(d)
        seen.append(m.get("streamvae_records_total", 0.0))
    assert any(0 < n < total for n in seen), f"no scrape while the daemon worked through the feed: {seen}"

    kenv.wait_caught_up(daemon=d)
    deadline = time.monotonic() + 30  # the last batch's counts and a lag measured after it
    while True:
        m = scrape(d)
        lag = series_of(m, "consumer_lag_records")
        if (m.get("streamvae_records_total") == total and len(lag) == kenv.partitions and not any(lag.values())) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert m["streamvae_records_total"] == total
    assert m["streamvae_batch_records_sum"] == total and m["streamvae_score_latency_seconds_count"] == total
    assert m["streamvae_batch_records_count"] == m["streamvae_batches_total"] == m["streamvae_batch_duration_seconds_count"]
    assert lag == {f'partition="{p}",topic="{kenv.input}"': 0.0 for p in range(kenv.partitions)}, lag

    dlq = Counter(r["reason"] for r in kenv.read(kenv.dlq))
    assert dlq == bad and set(bad) == {r for _, _, r in BAD}, dlq
    assert series_of(m, "dead_letters_total") == {f'reason="{r}"': float(n) for r, n in dlq.items()}
    alerts = Counter(a["kind"] for a in kenv.read(kenv.alerts))
    assert alerts["open"] >= 1, f"the level shift on {SHIFT[0]} raised no alert: {alerts}"
    assert series_of(m, "alerts_total") == {f'kind="{k}"': float(n) for k, n in alerts.items()}
    scored = kenv.read(scores)
    assert len(scored) == PUMPS * (N - WINDOW + 1)  # every reading windowed and scored, once
    assert m["streamvae_windows_scored_total"] == len(scored)

    version = d.healthz()["model_version"]
    assert series_of(m, "model_info") == {f'version="{version}"': 1.0}
    assert m["streamvae_live_entities"] == PUMPS and "streamvae_open_episodes" in m
    q = series_of(m, "entity_threshold")
    assert set(q) == {'quantile="0.5"', 'quantile="0.9"', 'quantile="0.99"', 'quantile="1"'}, q
    assert q['quantile="0.5"'] <= q['quantile="0.99"'] <= q['quantile="1"']
    assert m["streamvae_delivery_failures_total"] == 0 and m["streamvae_commit_failures_total"] == 0
    assert set(m) >= {"streamvae_retrains_started_total", "streamvae_poll_errors_total"}
