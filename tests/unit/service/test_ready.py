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


class Client:
    """A kafka-python client's view of its connections: the brokers of its metadata, and
    which of them it holds a set-up connection to (``connecting``: set up under way)."""

    def __init__(self, brokers: int) -> None:
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(node_id=i) for i in range(brokers)])
        self.live: set[int] = set()
        self.connecting: set[int] = set()

    def connected(self, node_id: int) -> bool:
        return node_id in self.live


class Consumer:
    """A KafkaConsumer's assignment and its client (None: a consumer that cannot tell)."""

    def __init__(self, assigned: int, connections: int | None) -> None:
        self.assigned = assigned
        if connections is not None:
            self._client = Client(brokers=3)
            self.connections = connections

    @property
    def connections(self) -> int:
        return len(self._client.live)

    @connections.setter
    def connections(self, n: int) -> None:
        self._client.live = set(range(n))

    def assignment(self) -> set[int]:
        return set(range(self.assigned))

    def metrics(self, raw: bool = False) -> dict[Any, Any]:
        """kafka-python's metrics, ``connection-count`` as it counts: set up or under way."""
        count = len(self._client.live | self._client.connecting)
        return {MetricName("connection-count", "consumer-metrics"): SimpleNamespace(value=lambda: float(count))}


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


def test_a_consumer_whose_client_cannot_tell_is_not_known_reachable() -> None:
    p = Probes(ready_poll_age=30.0, stall_after=300.0, clock=FakeClock(0.0))
    p.polled(Consumer(1, None), got_records=True)
    check = p.ready("v1", stopping=False)["checks"]["broker_reachable"]
    assert not check["ok"] and check["why"].startswith("unknown")


def test_a_connection_still_being_set_up_is_not_a_live_one() -> None:
    """While the broker is down the client retries a connection every backoff; a poll that
    looks while one is being set up has not reached the broker (kafka-python's
    ``connection-count`` metric counts it, and kept /readyz's ``recent_poll`` fresh)."""
    clock, c = FakeClock(0.0), Consumer(assigned=1, connections=1)
    p = Probes(ready_poll_age=3.0, stall_after=300.0, clock=clock)
    p.polled(c, got_records=False)
    assert p.ready("v1", stopping=False)["ready"]
    c.connections = 0
    c._client.connecting = {0}
    for _ in range(5):
        clock.advance(1.0)
        p.polled(c, got_records=False)
    r = p.ready("v1", stopping=False)["checks"]
    assert not r["broker_reachable"]["ok"] and r["broker_reachable"]["connections"] == 0
    assert not r["recent_poll"]["ok"] and r["recent_poll"]["seconds_ago"] == 5.0
