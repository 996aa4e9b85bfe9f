"""Harness for the integration tests on the REAL Kafka broker started by deploy/kafka/broker.py.

One broker per session (KRaft, 127.0.0.1, jars from Maven Central); uuid-named topics
per test. If the broker cannot start, the session FAILS with the broker's log: these
tests never skip.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[2]
STREAMVAE = str(ROOT / ".venv" / "bin" / "streamvae") if (ROOT / ".venv" / "bin" / "streamvae").exists() else None
FEATURES = ("a", "b", "c", "d")
WINDOW = 16
T0 = 1_700_000_000


def _broker_module() -> Any:
    spec = importlib.util.spec_from_file_location("streamvae_kafka_broker", ROOT / "deploy" / "kafka" / "broker.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def broker_mod() -> Any:
    return _broker_module()


@pytest.fixture(scope="session")
def broker(broker_mod: Any) -> Iterator[Any]:
    b = broker_mod.LocalBroker()
    try:
        b.start()
    except broker_mod.BrokerError as e:
        pytest.fail(f"the Kafka broker did not start (integration tests need it; they do not skip):\n{e}")
    yield b
    b.stop()


def series(n: int, seed: int) -> np.ndarray:
    """(n, 4) correlated sinusoids with noise, one reading per second."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) + rng.uniform(0, 60)
    b = 2 * np.pi * t / 60
    x = np.stack([np.sin(b), 0.8 * np.sin(b + 0.6), 0.5 * np.sin(b) + 0.5 * np.cos(b + 0.3) + 2.0, np.cos(b)], axis=1)
    return x + 0.1 * rng.standard_normal(x.shape)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained by the real `streamvae train` on normal data."""
    d = tmp_path_factory.mktemp("model")
    src = d / "train.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", *FEATURES])
        for seed in (1, 2):
            for i, row in enumerate(series(2500, seed)):
                w.writerow([T0 + seed * 10_000 + i, *(f"{v:.5f}" for v in row)])
    out = d / "model"
    cmd = [*streamvae_cmd(), "train", "--csv", str(src), "--out", str(out), "--window", str(WINDOW),
           "--encoder", "32,16", "--latent", "4", "--epochs", "60", "--seed", "1", "--max-gap", "30"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def streamvae_cmd() -> list[str]:
    return [STREAMVAE] if STREAMVAE else [sys.executable, "-m", "streamvae"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Env:
    """uuid-named topics and group for one test, on the session broker."""

    def __init__(self, bootstrap: str, partitions: int = 3) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.input, self.alerts, self.dlq, self.control = (f"{n}-{tag}" for n in ("sensors", "alerts", "dlq", "control"))
        self.group = f"streamvae-{tag}"
        adm = KafkaAdminClient(bootstrap_servers=bootstrap)
        adm.create_topics([NewTopic(self.input, partitions, 1), NewTopic(self.alerts, 1, 1), NewTopic(self.dlq, 1, 1)])
        adm.close()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    def send(self, key: str | None, value: bytes) -> None:
        self.producer.send(self.input, key=None if key is None else key.encode(), value=value)

    def send_reading(self, entity: str, ts: float, row: Any) -> None:
        rec = {"entity": entity, "ts": ts, "values": {f: (None if v is None or v != v else float(v)) for f, v in zip(FEATURES, row)}}
        self.send(entity, json.dumps(rec).encode())

    def flush(self) -> None:
        self.producer.flush(30)

    def config(self, tmp: Path, model: Path, **overrides: Any) -> Path:
        sections: dict[str, dict[str, Any]] = {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "topics": {"input": self.input, "alerts": self.alerts, "dead_letter": self.dlq, "control": self.control},
            "group": {"id": self.group, "max_poll_records": 500, "session_timeout_ms": 6000},
            "records": {"max_gap": 30.0},
            "model": {"path": str(model)},
            # the daemon mechanics under test, at one reading a second with W = 16: episodes of
            # a fault (updates every 300 windows, as the former 300 s), and per-entity
            # trackers as soon as an entity has 2000 windows (no day-long span: a feed here
            # lasts minutes)
            "threshold": {"kind": "spot", "q": 1e-3, "min_history_s": 0.0},
            "episodes": {"open_after": 2, "close_after": 20, "update_every": 300},
            "http": {"port": 0},
        }
        for key, v in overrides.items():
            sec, name = key.split("__")
            sections.setdefault(sec, {})[name] = v
        lines = []
        for sec, kv in sections.items():
            lines.append(f"[{sec}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
        p = tmp / f"{self.group}-{uuid.uuid4().hex[:4]}.toml"
        p.write_text("\n".join(lines) + "\n")
        return p

    def end_offsets(self) -> dict[int, int]:
        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        tps = [TopicPartition(self.input, p) for p in sorted(c.partitions_for_topic(self.input) or [])]
        ends = c.end_offsets(tps)
        c.close()
        return {tp.partition: off for tp, off in ends.items()}

    def committed(self) -> dict[int, tuple[int, dict[str, Any]]]:
        adm = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            got = adm.list_group_offsets(self.group).get(self.group, {})
        finally:
            adm.close()
        return {tp.partition: (om.offset, json.loads(om.metadata or "{}")) for tp, om in got.items() if tp.topic == self.input}

    def scored_fraction(self) -> float:
        ends = self.end_offsets()
        com = self.committed()
        total = sum(ends.values())
        done = sum(min(com.get(p, (0, {}))[1].get("scored_to", 0), e) for p, e in ends.items())
        return done / max(total, 1)

    def wait_caught_up(self, timeout: float = 120.0, daemon: "DaemonProc | None" = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon is not None:
                daemon.check_alive()
            try:
                if self.scored_fraction() >= 1.0:
                    return
            except Exception:  # broker briefly unavailable: keep waiting
                pass
            time.sleep(0.5)
        raise AssertionError(f"daemon did not catch up in {timeout}s: committed {self.committed()} vs end {self.end_offsets()}"
                             + (f"\n{daemon.log_tail()}" if daemon else ""))

    def read(self, topic: str, idle_ms: int = 3000) -> list[dict[str, Any]]:
        c = KafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=idle_ms,
                          enable_auto_commit=False)
        out = [json.loads(m.value) for m in c]
        c.close()
        return out

    def close(self) -> None:
        self.producer.close(5)


@pytest.fixture
def kenv(broker: Any) -> Iterator[Env]:
    e = Env(broker.bootstrap)
    yield e
    e.close()


class DaemonProc:
    """`streamvae run --config FILE` as a real subprocess, its log kept in a file."""

    def __init__(self, config: Path, log: Path, http_port: int | None = None) -> None:
        self.http_port = http_port or free_port()
        env = {**os.environ, "STREAMVAE_HTTP__PORT": str(self.http_port)}
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen([*streamvae_cmd(), "run", "--config", str(config)], stdout=self._fh,
                                     stderr=subprocess.STDOUT, env=env)
        self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"daemon not ready in {timeout}s\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(f"streamvae_{name}{{") or line.startswith(f"streamvae_{name} "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}\n{self.log_tail()}")

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def log_tail(self, n: int = 60) -> str:
        self._fh.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._fh.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProc]]:
    started: list[DaemonProc] = []
    yield started
    for d in started:
        d.close()


# -- the simulated plant (streamvae.offline.feed) on the real broker -------------------------------

MATCH_MARGIN_S = 30.0  # as scripts/demo.py: an open alert counts for an episode up to W + 30 s after its end


def metric_series(d: DaemonProc, name: str) -> dict[str, float]:
    """Every series of ``streamvae_<name>`` on the daemon's /metrics: label text -> value
    (``""`` for the unlabelled one), e.g. ``{'result="promoted"': 1.0}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == f"streamvae_{name}":
            out[""] = float(value)
        elif head.startswith(f"streamvae_{name}{{") and head.endswith("}"):
            out[head[len(name) + 11 : -1]] = float(value)
    return out


def healthz(d: DaemonProc) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/healthz", timeout=2).read())
    return out


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
    """scripts/demo.py's score card over the event-time span ``[t0, t1)``.

    An injected episode starting in the span is caught if an ``open`` alert of its entity
    has ``window_end`` in ``[start_ts, end_ts + window_s + MATCH_MARGIN_S]``. A false
    episode is an alert episode whose ``open`` alert matches no injected episode, counted in
    every span it is alive in (opened before ``t1``, not closed before ``t0``): an episode
    that a stale model never closes is one false episode in each span, not none, as
    counting only the ``open`` alerts inside the span would have it (``carried`` says how
    many were opened before ``t0``). Per entity-hour of normal data: entities x span, minus
    the time of the injected episodes that start in it.
    """
    def matches(a: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for e in episodes if e["entity"] == a["entity"]
                and e["start_ts"] <= a["window_end"] <= e["end_ts"] + window_s + MATCH_MARGIN_S]

    opened: dict[str, dict[str, Any]] = {}
    closed: dict[str, float] = {}
    for a in alerts:
        if a.get("kind") == "open":
            opened[a["episode_id"]] = a
        elif a.get("kind") == "close":
            closed[a["episode_id"]] = a["window_end"]
    mine = [e for e in episodes if t0 <= e["start_ts"] < t1]
    caught = {e["id"] for a in opened.values() for e in matches(a)}
    false = [a for eid, a in opened.items()
             if a["window_end"] < t1 and closed.get(eid, float("inf")) >= t0 and not matches(a)]
    anomalous = sum(min(e["end_ts"], t1) - e["start_ts"] + interval for e in mine)
    eh = (entities * (t1 - t0) - anomalous) / 3600.0
    found = [e for e in mine if e["id"] in caught]
    return {"false": false, "false_per_eh": len(false) / eh, "entity_hours": eh, "episodes": len(mine),
            "carried": sum(1 for a in false if a["window_end"] < t0), "caught": len(found),
            "recall": len(found) / len(mine) if mine else float("nan"),
            "missed": [e for e in mine if e["id"] not in caught]}
