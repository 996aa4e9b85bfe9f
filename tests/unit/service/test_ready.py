"""Alive and ready (streamvae/service/ready.py) from a stand-in consumer and a FakeClock."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

from streamvae.core.clock import FakeClock
from streamvae.service.ready import Probes


class MetricName(NamedTuple):
    """kafka-python's metric key (name, group, ...): hashable."""

    name: str
    group: str


class Consumer:
    """A KafkaConsumer's assignment and its ``connection-count`` metric (None: metrics off)."""

    def __init__(self, assigned: int, connections: int | None) -> None:
        self.assigned, self.connections = assigned, connections
        self.lookups = 0

    def assignment(self) -> set[int]:
        return set(range(self.assigned))

    def metrics(self, raw: bool = False) -> dict[Any, Any] | None:
        self.lookups += 1
        if self.connections is None:
            return None
        other = SimpleNamespace(value=lambda: 99.0)
        return {MetricName("fetch-rate", "consumer-fetch-manager-metrics"): other,
                MetricName("connection-count", "consumer-metrics"): SimpleNamespace(value=lambda: float(self.connections or 0))}


def test_ready_needs_partitions_a_model_and_a_broker_that_answered_lately() -> None:
    clock, c = FakeClock(0.0), Consumer(assigned=0, connections=1)
    p = Probes(ready_poll_age=3.0, stall_after=300.0, clock=clock)
    assert not p.ready("v1", stopping=False)["checks"]["loop_running"]["ok"]  # no poll yet
    p.polled(c, got_records=False)
    r = p.ready("v1", stopping=False)
    assert not r["ready"] and [k for k, v in r["checks"].items() if not v["ok"]] == ["partitions_assigned"]
    c.assigned = 3
    p.polled(c, got_records=False)
    assert p.ready("v1", stopping=False)["ready"]
    assert not p.ready("", stopping=False)["ready"]  # no model
    c.connections = 0  # the broker went away ...
    clock.advance(2.0)
    p.polled(c, got_records=True)  # ... though a poll still returned buffered records
    r = p.ready("v1", stopping=False)
    assert not r["ready"] and r["checks"]["recent_poll"]["ok"] and not r["checks"]["broker_reachable"]["ok"]
    clock.advance(3.5)
    p.polled(c, got_records=False)
    assert p.ready("v1", stopping=False)["checks"]["recent_poll"]["seconds_ago"] == 3.5
    c.connections = 2  # back
    p.polled(c, got_records=False)
    assert p.ready("v1", stopping=False)["ready"]
    assert c.lookups == 1  # the metric object is looked up once
    assert not p.ready("v1", stopping=True)["ready"]


def test_alive_until_stopping_or_stalled() -> None:
    clock = FakeClock(0.0)
    p = Probes(ready_poll_age=30.0, stall_after=300.0, clock=clock)
    assert p.health(stopping=False) == {"ok": True, "loop": "starting", "seconds_since_poll": None}
    p.polled(Consumer(1, 1), got_records=False)
    clock.advance(299.0)
    assert p.health(stopping=False)["ok"]
    clock.advance(2.0)
    assert p.health(stopping=False) == {"ok": False, "loop": "stalled", "seconds_since_poll": 301.0}
    assert p.health(stopping=True)["loop"] == "stopping"


def test_without_consumer_metrics_the_broker_is_not_known_reachable() -> None:
    p = Probes(ready_poll_age=30.0, stall_after=300.0, clock=FakeClock(0.0))
    p.polled(Consumer(1, None), got_records=True)
    check = p.ready("v1", stopping=False)["checks"]["broker_reachable"]
    assert not check["ok"] and check["why"].startswith("unknown")
