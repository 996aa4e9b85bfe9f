"""The daemon's metrics without a broker: names by Prometheus' conventions, one registry per
daemon, what one batch and one poll move, and the exposition a scraper parses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamvae.core.bank import ThresholdBank
from streamvae.service.metrics import LATENCY_SECONDS, Metrics, threshold_quantiles

NAME = re.compile(r"streamvae_[a-z][a-z0-9_]*[a-z0-9]")
NOW = 1_800_000_000.0  # the wall clock, unix seconds


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Rec:
    timestamp: int  # ms, as kafka-python's ConsumerRecord


class Assembler:
    def __init__(self, live: int, resets: int) -> None:
        self.live, self.clock_resets_ = live, resets

    def __len__(self) -> int:
        return self.live


@dataclass
class Pipeline:
    """The parts of a StreamPipeline the metrics read."""

    thresholds: ThresholdBank
    assembler: Assembler
    episodes: Any = field(default_factory=lambda: SimpleNamespace(open_count=lambda: 2))
    accepted_: int = 0


def pipeline(accepted: int = 0, resets: int = 0) -> Pipeline:
    bank = ThresholdBank("quantile", {"q": 0.9, "min_samples": 10}, min_history=20)
    bank.warm_start(np.arange(100.0))
    return Pipeline(bank, Assembler(7, resets), accepted_=accepted)


def outcome(records: int, scored: int, rebuilt: int = 0) -> Any:
    return SimpleNamespace(records=records, rebuilt=rebuilt, result=SimpleNamespace(scored=[None] * scored))


def test_names_follow_prometheus_conventions() -> None:
    families = list(Metrics().registry.collect())
    assert families
    for fam in families:
        assert NAME.fullmatch(fam.name), fam.name
        assert fam.documentation, f"{fam.name} has no help text"
        if fam.type == "counter":  # the family is named without _total; its samples end in it
            assert not fam.name.endswith("_total")
        else:
            assert not fam.name.endswith("_total"), f"{fam.name}: only counters end in _total"
        if "duration" in fam.name or "latency" in fam.name:
            assert fam.name.endswith("_seconds"), f"{fam.name}: times are in seconds, and say so"
    names = Metrics().names()
    for n in names:
        if n.endswith("_total"):
            assert any(f.type == "counter" and n == f.name + "_total" for f in families), n
    assert {"streamvae_records_total", "streamvae_windows_scored_total", "streamvae_alerts_total",
            "streamvae_dead_letters_total", "streamvae_batch_duration_seconds_bucket",
            "streamvae_score_latency_seconds_bucket", "streamvae_score_latency_seconds_count",
            "streamvae_batch_records_sum", "streamvae_consumer_lag_records", "streamvae_live_entities",
            "streamvae_open_episodes", "streamvae_entity_threshold", "streamvae_model_info", "streamvae_retrains_total",
            "streamvae_retrains_started_total", "streamvae_retrain_duration_seconds_bucket",
            "streamvae_delivery_failures_total", "streamvae_commit_failures_total"} <= names
    # a count since start is a counter, never a gauge
    gauges = {f.name for f in families if f.type == "gauge"}
    assert not {n for n in gauges if re.search(r"failures|resets|accepted|errors", n)}, gauges


def test_each_daemon_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.records.inc(5)
    a.model.info({"version": "v1"})
    b.model.info({"version": "v2"})
    assert a.get("records_total") == 5 and b.get("records_total") == 0
    assert a.get("model_info", version="v1") == 1 and b.get("model_info", version="v1") == 0


def test_a_batch_moves_counters_and_histograms_once_per_record() -> None:
    m, p = Metrics(), pipeline(accepted=1, resets=3)
    ages = [0.003, 0.003, 0.2, 7.0, 4000.0, -2.0]  # seconds since produced; -2: a producer clock ahead
    batch = {TP("in", 0): [Rec(int(round((NOW - a) * 1000))) for a in ages[:4]],
             TP("in", 1): [Rec(int(round((NOW - a) * 1000))) for a in ages[4:]] + [Rec(-1)]}  # -1: no timestamp
    m.batch_done(outcome(records=7, scored=5, rebuilt=1), batch, p, seconds=0.04, now=NOW, unknown_values=9)
    assert m.get("records_total") == 7 and m.get("records_rebuilt_total") == 1
    assert m.get("windows_scored_total") == 5 and m.get("batches_total") == 1
    assert m.get("batch_duration_seconds_count") == 1 and m.get("batch_duration_seconds_bucket", le="0.05") == 1
    assert m.get("batch_duration_seconds_bucket", le="0.025") == 0
    assert m.get("batch_records_sum") == 7 and m.get("batch_records_bucket", le="10.0") == 1
    # every record with a timestamp once: le is inclusive and cumulative
    assert m.get("score_latency_seconds_count") == 6
    assert m.get("score_latency_seconds_bucket", le="0.005") == 3  # 0.003 twice, and the clock ahead as 0
    assert m.get("score_latency_seconds_bucket", le="0.25") == 4
    assert m.get("score_latency_seconds_bucket", le="10.0") == 5
    assert m.get("score_latency_seconds_bucket", le="1800.0") == 5 and m.get("score_latency_seconds_bucket", le="+Inf") == 6
    assert m.get("score_latency_seconds_sum") == pytest.approx(0.003 * 2 + 0.2 + 7.0 + 4000.0, abs=0.01)
    assert m.get("live_entities") == 7 and m.get("open_episodes") == 2
    assert (m.get("changes_accepted_total"), m.get("clock_resets_total"), m.get("unknown_feature_values_total")) == (1, 3, 9)
    assert m.get("entity_threshold", quantile="0.5") == pytest.approx(89.0)  # no entity yet: the global one

    p.accepted_ = 0  # state restored from a checkpoint: a counter never goes down ...
    m.batch_done(outcome(records=1, scored=0), {TP("in", 0): [Rec(int(NOW * 1000))]}, p, 0.01, NOW + 1, 9)
    assert m.get("changes_accepted_total") == 1 and m.get("records_total") == 8
    p.accepted_ = 2  # ... and counts on from the restored total
    m.batch_done(outcome(records=1, scored=0), {TP("in", 0): [Rec(int(NOW * 1000))]}, p, 0.01, NOW + 2, 9)
    assert m.get("changes_accepted_total") == 3 and m.get("score_latency_seconds_count") == 8


def test_threshold_quantiles_weigh_every_entity_once() -> None:
    bank = pipeline().thresholds
    assert threshold_quantiles(bank) == pytest.approx([89.0] * 4)
    for e in ("a", "b", "c"):  # own trackers after 20 unflagged scores
        for i in range(25):
            bank.update(e, float(i % 10) + (10.0 if e == "c" else 0.0))
    bank.update("d", 1.0)  # still on the global tracker
    assert bank.has_own("a") and not bank.has_own("d")
    want = np.quantile([bank.get(e) for e in "abcd"], [0.5, 0.9, 0.99, 1.0])
    assert threshold_quantiles(bank) == pytest.approx(want)


class Consumer:
    """What after_poll asks of a KafkaConsumer."""

    def __init__(self, ends: dict[TP, int | None], positions: dict[TP, int]) -> None:
        self.ends, self.positions = ends, positions

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int | None:
        return self.ends[tp]

    def position(self, tp: TP, timeout_ms: int | None = None) -> int:
        return self.positions[tp]


def test_lag_per_partition_from_highwater_and_position() -> None:
    m = Metrics()
    c = Consumer({TP("in", 0): 100, TP("in", 1): 50, TP("in", 2): None}, {TP("in", 0): 40, TP("in", 1): 50, TP("in", 2): 0})
    m.after_poll(c, commit_failures=0, now=10.0)
    assert m.get("consumer_lag_records", topic="in", partition="0") == 60
    assert m.get("consumer_lag_records", topic="in", partition="1") == 0
    assert 'partition="2"' not in generate_latest(m.registry).decode()  # no fetch response yet: no series
    c.positions[TP("in", 0)] = 100
    m.after_poll(c, commit_failures=2, now=10.5)  # within LAG_EVERY_S: not measured again
    assert m.get("consumer_lag_records", topic="in", partition="0") == 60 and m.get("commit_failures_total") == 2
    del c.ends[TP("in", 1)]  # revoked
    m.after_poll(c, commit_failures=2, now=11.0)
    assert m.get("consumer_lag_records", topic="in", partition="0") == 0
    assert 'partition="1"' not in generate_latest(m.registry).decode()


def test_the_exposition_parses_with_histograms_and_no_created_series() -> None:
    m = Metrics()
    m.batch_done(outcome(3, 1), {TP("in", 0): [Rec(int(NOW * 1000) - 20)] * 3}, pipeline(), 0.02, NOW, 0)
    m.dead_letters.labels(reason="not json").inc()
    m.model.info({"version": "2026-11-23T07-00-00Z-3f2a"})
    text = generate_latest(m.registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "_created" not in text
    lat = fams["streamvae_score_latency_seconds"]
    assert lat.type == "histogram"
    les = [s.labels["le"] for s in lat.samples if s.name.endswith("_bucket")]
    assert les == [str(float(b)) for b in LATENCY_SECONDS] + ["+Inf"]
    assert fams["streamvae_model_info"].samples[0].labels == {"version": "2026-11-23T07-00-00Z-3f2a"}  # a gauge of 1 in this format
    assert fams["streamvae_dead_letters"].samples[0].labels == {"reason": "not json"}


class Producer:
    """What an Outbox asks of a KafkaProducer, noting the topics sent to."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def send(self, topic: str, key: Any = None, value: Any = None) -> None:
        self.topics.append(topic)


def outbox(p: Producer | None = None) -> Any:
    from streamvae.kafka.produce import Outbox

    return Outbox(p or Producer())


def test_alerts_and_dead_letters_count_once_their_batch_is_acknowledged() -> None:
    from streamvae.config import Config
    from streamvae.core.episodes import Alert
    from streamvae.core.pipeline import BatchResult
    from streamvae.errors import RecordError
    from streamvae.service.batch import BatchOutcome, DeadLetter
    from streamvae.service.emit import Emitter

    m = Metrics()
    em = Emitter(Config(), m)
    alert = Alert("id-1", "open", "pump-1", 0.0, 15.0, 9.0, 5.0, "v1", (), "ep-1", NOW, 9.0)
    dead = DeadLetter(TP("in", 0), 7, b"pump-1", b"{not json", RecordError("not_json", "not JSON"))
    out = BatchOutcome(BatchResult(), BatchResult(), [alert], [dead], {}, records=20)
    em.send(outbox(), out, NOW)  # the delivery fails: nothing is counted ...
    assert m.get("alerts_total", kind="open") == 0 and m.get("dead_letters_total", reason="not_json") == 0
    ids = em.send(outbox(), out, NOW)  # ... the batch is sent again and acknowledged: counted once
    em.delivered(ids)
    assert m.get("alerts_total", kind="open") == 1 and m.get("dead_letters_total", reason="not_json") == 1
    em.delivered([])  # nothing new sent since
    again = Producer()
    em.delivered(em.send(outbox(again), out, NOW))  # read again after a restart: the alert is not sent again
    assert m.get("alerts_total", kind="open") == 1 and m.get("alerts_suppressed_duplicate_total") == 1
    assert again.topics == [Config().topics.dead_letter] and m.get("dead_letters_total", reason="not_json") == 2
