"""kafka-python 3.0's two fetch stalls on the real broker, and streamvae/kafka/stall.py closing them.

1. The race: a fetch response lands while ``fetch_records`` sends the next fetches. Its
   records are buffered, no fetch is left in flight, and kafka-python's poll sleeps
   ``retry_backoff_ms`` (100 ms) instead of returning them. The test makes the response
   land there every time: it wraps ``Fetcher.send_fetches`` to produce records for the
   fetch in flight and wait until that fetch completes before sending.
2. The wait of 0 ms (``ReadAhead.fetch`` while the consumer is behind the broker, a poll
   while records are held): kafka-python's ends in a ``KafkaTimeoutError``
   whose traceback keeps the caller's frames, and what they hold, alive in a reference
   cycle until the cyclic collector runs."""

from __future__ import annotations

import gc
import time
import weakref
from typing import Any

import kafka.consumer.group
import pytest
from kafka import KafkaProducer
from kafka.consumer.fetcher import Fetcher

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.kafka import stall
from streamvae.kafka.clients import make_consumer
from streamvae.testing.topics import Topics

LATE = 10  # records the fetch in flight brings, produced while the poll sends its next fetches


@pytest.fixture
def topics(broker: Any) -> Topics:
    return Topics(broker.bootstrap, partitions=1, prefix="stall-")


class Sleeps:
    """kafka.consumer.group's ``time`` module, noting each ``sleep``."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        time.sleep(seconds)


def read_first(c: Any, p: KafkaProducer, topic: str) -> None:
    """Produce one record and poll until ``c`` has read it: the group is joined."""
    p.send(topic, b"first")
    p.flush(30)
    deadline = time.monotonic() + 60
    while not c.poll(200) and time.monotonic() < deadline:
        pass


def poll_after_a_response_lands_mid_send(t: Topics, monkeypatch: pytest.MonkeyPatch,
                                         fixed: bool) -> tuple[list[bytes], list[float]]:
    """Drain the topic, leave one fetch in flight (the broker holds it: no records), then
    poll once (timeout 1 s) while records for that fetch arrive mid-send. ``fixed``:
    with stall.py's fix (``make_consumer`` installs it), else kafka-python's own
    ``fetch_records``. Returns the values the poll brought and the sleeps it took."""
    g = GroupConfig(id=t.group, auto_offset_reset="earliest", fetch_min_bytes=1, fetch_max_wait_ms=500)
    c = make_consumer(KafkaConfig(bootstrap_servers=t.bootstrap), g, [t.input])
    if not fixed:
        stall.uninstall()
    p = KafkaProducer(bootstrap_servers=t.bootstrap, linger_ms=60_000)  # LATE records in one batch, at flush()
    send = Fetcher.send_fetches
    try:
        read_first(c, p, t.input)
        c._fetcher.fetch_records(100, timeout_ms=0)  # as ReadAhead.fetch: sends the next fetch
        assert c._fetcher.in_flight_fetches(), "no fetch in flight: the setup is wrong, not the code"
        armed = [True]

        def late_response(self: Any) -> Any:
            if armed.pop() if armed else False:
                for i in range(LATE):
                    p.send(t.input, b"%d" % i)
                p.flush(30)
                until = time.monotonic() + 10
                while self.in_flight_fetches() and time.monotonic() < until:  # it lands now, mid-send
                    time.sleep(0.001)
            return send(self)

        Fetcher.send_fetches = late_response  # type: ignore[method-assign]
        sleeps = Sleeps()
        monkeypatch.setattr(kafka.consumer.group, "time", sleeps)
        got = c.poll(timeout_ms=1000)
        monkeypatch.undo()
        return [r.value for recs in got.values() for r in recs], sleeps.slept
    finally:
        Fetcher.send_fetches = send  # type: ignore[method-assign]
        stall.install()
        p.close()
        c.close(autocommit=False)


def test_records_that_land_while_the_next_fetch_is_sent_come_back_without_a_sleep(
        topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    values, slept = poll_after_a_response_lands_mid_send(topics, monkeypatch, fixed=True)
    assert values == [b"%d" % i for i in range(LATE)]
    assert slept == []


def test_kafka_python_alone_sleeps_with_the_records_in_its_buffer(
        topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race stall.py closes is kafka-python's: without it the poll sleeps
    retry_backoff_ms (100 ms) before it hands over the records it already holds. If this
    fails, kafka-python no longer has the race and stall.py can go."""
    values, slept = poll_after_a_response_lands_mid_send(topics, monkeypatch, fixed=False)
    assert values == [b"%d" % i for i in range(LATE)]
    assert slept == [0.1]


class Batch:
    """Stands for what the daemon's frames hold while it reads ahead: a batch's records."""


def fetch_holding_a_batch(c: Any) -> "weakref.ref[Batch]":
    """The fetch step as ``ReadAhead.fetch`` runs it while the consumer is behind the
    broker (streamvae/kafka/readahead.py; caught up, it returns before this step)."""
    batch = Batch()
    c._fetcher.fetch_records(100, timeout_ms=0)  # nothing buffered, a fetch in flight: kafka-python would wait 0 ms
    return weakref.ref(batch)


@pytest.mark.parametrize("fixed", [True, False])
def test_reading_ahead_leaves_the_callers_objects_to_reference_counting(topics: Topics, fixed: bool) -> None:
    g = GroupConfig(id=topics.group, auto_offset_reset="earliest")
    c = make_consumer(KafkaConfig(bootstrap_servers=topics.bootstrap), g, [topics.input])
    p = KafkaProducer(bootstrap_servers=topics.bootstrap)
    try:
        read_first(c, p, topics.input)
        if not fixed:
            stall.uninstall()
        c._fetcher.send_fetches()  # the broker holds it: nothing to read
        gc.collect()
        gc.disable()
        try:
            ref = fetch_holding_a_batch(c)
            assert c._fetcher.in_flight_fetches(), "no fetch in flight: the setup is wrong, not the code"
            alive = ref() is not None
        finally:
            gc.enable()
        assert alive is not fixed  # kafka-python alone: freed only by the collector
    finally:
        stall.install()
        p.close()
        c.close(autocommit=False)
