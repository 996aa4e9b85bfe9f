"""Harness for the integration tests on the REAL Kafka broker started by deploy/kafka/broker.py.

One broker per session (KRaft, 127.0.0.1, jars from Maven Central; the fixtures are in
conftest.py); uuid-named topics per test. If the broker cannot start, the session FAILS
with the broker's log: these tests never skip.

The pytest layer only: the test plant's data and defaults, and thin re-exports of
streamvae.testing (the daemon process, the broker, topics, the ground-truth score card),
which the demo and the benchmarks share.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka import KafkaProducer

from streamvae.testing import procs, truth
from streamvae.testing.broker import broker_module
from streamvae.testing.procs import run_cmd, streamvae_cmd, write_config
from streamvae.testing.proof.plant import FEATURES, T0, WINDOW, daemon_sections, series
from streamvae.testing.topics import Topics

__all__ = ["FEATURES", "T0", "WINDOW", "series", "streamvae_cmd"]  # the plant, for the tests


def started_broker(**kw: Any) -> Iterator[Any]:
    """A started ``LocalBroker(**kw)`` for a fixture to yield, stopped after; a broker that
    does not start fails the test (integration tests never skip)."""
    mod = broker_module()
    b = mod.LocalBroker(**kw)
    try:
        b.start()
    except mod.BrokerError as e:
        pytest.fail(f"the Kafka broker ({kw or 'plain'}) did not start (integration tests need it; they do not skip):\n{e}")
    try:
        yield b
    finally:
        b.stop()


class Env(Topics):
    """uuid-named topics and group for one test, on the session broker, and a producer."""

    def __init__(self, bootstrap: str, partitions: int = 3) -> None:
        super().__init__(bootstrap, partitions)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    def send(self, key: str | None, value: bytes, partition: int | None = None) -> None:
        """One record to the input; ``partition`` None: the key's partition."""
        self.producer.send(self.input, key=None if key is None else key.encode(), value=value, partition=partition)

    def send_reading(self, entity: str, ts: float, row: Any, partition: int | None = None) -> None:
        rec = {"entity": entity, "ts": ts, "values": {f: (None if v is None or v != v else float(v)) for f, v in zip(FEATURES, row)}}
        self.send(entity, json.dumps(rec).encode(), partition)

    def flush(self) -> None:
        self.producer.flush(30)

    def config(self, tmp: Path, model: Path, **overrides: Any) -> Path:
        sections = daemon_sections(self.config_sections(), model)
        for key, v in overrides.items():
            sec, name = key.split("__")
            sections.setdefault(sec, {})[name] = v
        return write_config(tmp / f"{self.group}-{uuid.uuid4().hex[:4]}.toml", sections)

    def close(self) -> None:
        self.producer.close(5)


class DaemonProc(procs.DaemonProc):
    """`streamvae run --config FILE` as a real subprocess, its log kept in a file; ready
    (/healthz answers) when the constructor returns."""

    def __init__(self, config: Path, log: Path, http_port: int | None = None) -> None:
        super().__init__(run_cmd(config), log, http_port)
        self.wait_ready(90.0)


# -- the simulated plant (streamvae.offline.feed) on the real broker -------------------------------

def metric_series(d: DaemonProc, name: str) -> dict[str, float]:
    return d.metric_series(name)


def healthz(d: DaemonProc) -> dict[str, Any]:
    return d.healthz()


class FeedCursor:
    """Sends a :class:`~streamvae.offline.feed.SensorFeed` in event-time slices, one timeline:
    ``send_until(ts)`` produces every record before ``ts`` (keyed by entity, as fast as the
    broker takes them) and keeps the rest for the next call."""

    def __init__(self, env: Env, feed: Any) -> None:
        self.env = env
        self.feed = feed
        self._it = iter(feed.records())
        self._next: dict[str, Any] | None = next(self._it, None)
        self.sent = 0

    def send_until(self, ts: float) -> int:
        n = 0
        while self._next is not None and self._next["ts"] < ts:
            rec = self._next
            self.env.producer.send(self.env.input, key=rec["entity"].encode(), value=json.dumps(rec).encode())
            n += 1
            self._next = next(self._it, None)
        self.env.flush()
        self.sent += n
        return n

    def send_paced(self, ts: float, speedup: float, step_s: float = 10.0, between: Any = None) -> None:
        """Send every record before ``ts`` with event time running ``speedup`` times faster
        than wall time, in slices of ``step_s`` event seconds; ``between(sent_to)`` is
        called after each slice (e.g. to watch the daemon)."""
        t0 = time.monotonic()
        start = self._next["ts"] if self._next is not None else ts
        at = start
        while at < ts:
            at = min(ts, at + step_s)
            self.send_until(at)
            if between is not None:
                between(at)
            time.sleep(max(0.0, t0 + (at - start) / speedup - time.monotonic()))


def score_span(alerts: list[dict[str, Any]], episodes: list[dict[str, Any]], entities: int, t0: float, t1: float,
               interval: float, window_s: float) -> dict[str, Any]:
    """streamvae.testing.truth.score_span (scripts/demo.py's score card) over ``[t0, t1)``, as a dict."""
    return dataclasses.asdict(truth.score_span(alerts, episodes, entities, t0, t1, interval, window_s))
