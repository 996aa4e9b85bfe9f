"""The plant of the proof and of the integration tests: its readings, its model, and a live feed.

Every entity reads four correlated sinusoids with noise, one reading a second of event
time (:func:`series`); :func:`train_model` trains the real ``streamvae train`` on two
normal runs of it. :class:`Feeder` sends every entity's next reading, step after step, at
a steady pace until told to stop, injects level shifts (the anomalies the daemon must
alert) at known steps and, now and then, a record the daemon must refuse; it remembers
where each refused record landed (partition, offset), so the dead-letter topic can be
checked record by record.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer

from streamvae.testing.procs import train

FEATURES = ("a", "b", "c", "d")
WINDOW = 16
T0 = 1_700_000_000


def series(n: int, seed: int | tuple[int, ...], start: int = 0, phase: float | None = None) -> np.ndarray:
    """(n, 4) correlated sinusoids with noise, one reading per second: readings ``start ..
    start + n - 1`` of the run whose phase is ``phase`` (default: drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    x = signal(np.arange(start, start + n) + (rng.uniform(0, 60) if phase is None else phase))
    return x + 0.1 * rng.standard_normal(x.shape)


def signal(t: np.ndarray) -> np.ndarray:
    """(len(t), 4): the plant's four correlated sinusoids, without noise, at seconds ``t``
    into a one-minute cycle."""
    b = 2 * np.pi * t / 60
    return np.stack([np.sin(b), 0.8 * np.sin(b + 0.6), 0.5 * np.sin(b) + 0.5 * np.cos(b + 0.3) + 2.0, np.cos(b)], axis=1)


def train_model(folder: Path) -> Path:
    """A small model trained by the real ``streamvae train`` on normal readings; its directory."""
    src = folder / "train.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", *FEATURES])
        for seed in (1, 2):
            for i, row in enumerate(series(2500, seed)):
                w.writerow([T0 + seed * 10_000 + i, *(f"{v:.5f}" for v in row)])
    return train([src], folder / "model", "--window", str(WINDOW), "--encoder", "32,16", "--latent", "4",
                 "--epochs", "60", "--seed", "1", "--max-gap", "30", timeout=600)


def daemon_sections(sections: dict[str, dict[str, Any]], model: Path) -> dict[str, dict[str, Any]]:
    """The daemon settings the plant is run with, added to ``sections`` (kafka, topics, group).

    At one reading a second with W = 16: episodes of a fault (updates every 300 windows),
    and per-entity trackers as soon as an entity has 2000 windows (no day-long span: a feed
    here lasts minutes)."""
    sections["group"].update(max_poll_records=500, session_timeout_ms=6000)
    sections.update({
        "records": {"max_gap": 30.0},
        "model": {"path": str(model)},
        "threshold": {"kind": "spot", "q": 1e-3, "min_history_s": 0.0},
        "episodes": {"open_after": 2, "close_after": 20, "update_every": 300},
        "http": {"port": 0},
    })
    return sections


BAD_RECORDS = (  # records the daemon must refuse, whatever entity's key they carry
    b"{not json",
    b"[1, 2, 3]",
    b'{"entity": "%s", "values": {"a": 1.0}}',  # no ts
    b'{"entity": "%s", "ts": "yesterday", "values": {"a": 1.0}}',
)


@dataclass(frozen=True)
class Anomaly:
    """A level shift of ``delta`` on ``feature`` over readings ``[first, first + length)``."""

    entity: str
    first: int
    length: int
    feature: int
    delta: float = 3.0


@dataclass
class Sent:
    """What the feeder sent: readings per entity (steps 0..n-1), the anomalies injected,
    and the refused records' (partition, offset)."""

    steps: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)
    bad: list[tuple[int, int]] = field(default_factory=list)
    records: int = 0


class Feeder(threading.Thread):
    """Sends one reading of every entity per step, ``steps_per_s`` steps a wall second,
    until :meth:`finish` (see the module doc). Entity ``k`` with ``k % 3 == 1`` gets a
    shift of 40 readings every ``anomaly_every`` steps; one refused record goes out every
    ``bad_every`` steps."""

    def __init__(self, bootstrap: str, topic: str, entities: int, steps_per_s: float, seed: int = 0,
                 anomaly_every: int = 400, bad_every: int = 50, max_steps: int = 1_000_000) -> None:
        super().__init__(daemon=True, name="feeder")
        self.topic = topic
        self.names = [f"e{k:03d}" for k in range(entities)]
        self.steps_per_s = steps_per_s
        self.seed = seed
        self.anomaly_every = anomaly_every
        self.bad_every = bad_every
        self.max_steps = max_steps
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=2_147_483_647,
                                      max_in_flight_requests_per_connection=1, delivery_timeout_ms=600_000)
        self.sent = Sent()
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._bad_futures: list[Any] = []
        self._data: dict[str, np.ndarray] = {}

    def finish(self, timeout: float = 120.0) -> Sent:
        """Stop after the current step, wait until every record is acknowledged; what was sent."""
        self._halt.set()
        self.join(timeout)
        self.producer.flush(timeout)
        for f in self._bad_futures:
            md = f.get(timeout=timeout)
            self.sent.bad.append((md.partition, md.offset))
        self.producer.close(10)
        if self.error is not None:
            raise RuntimeError(f"the feeder failed: {self.error!r}")
        return self.sent

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by finish()
            self.error = e

    def _row(self, k: int, name: str, i: int) -> np.ndarray:
        """Entity ``k``'s reading ``i``: one continuous run, made 1,000 readings at a time."""
        block = i // 1000
        x = self._data.get(f"{name}/{block}")
        if x is None:
            self._data = {key: v for key, v in self._data.items() if not key.endswith(f"/{block - 1}")}
            x = self._data[f"{name}/{block}"] = series(1000, seed=(self.seed, k, block), start=block * 1000,
                                                       phase=(7.3 * k) % 60)
        row: np.ndarray = x[i % 1000].copy()
        return row

    def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while not self._halt.is_set() and i < self.max_steps:
            for k, name in enumerate(self.names):
                row = self._row(k, name, i)
                if k % 3 == 1 and i >= 200:
                    start = 200 + ((i - 200) // self.anomaly_every) * self.anomaly_every + (13 * k) % 100
                    if start <= i < start + 40:
                        row[k % 4] += 3.0
                        if i == start:
                            self.sent.anomalies.append(Anomaly(name, start, 40, k % 4))
                rec = {"entity": name, "ts": T0 + i, "values": dict(zip(FEATURES, map(float, row)))}
                self.producer.send(self.topic, key=name.encode(), value=json.dumps(rec).encode())
                self.sent.records += 1
            if self.bad_every and i % self.bad_every == self.bad_every - 1:
                name = self.names[(i // self.bad_every) % len(self.names)]
                body = BAD_RECORDS[(i // self.bad_every) % len(BAD_RECORDS)]
                value = body % name.encode() if b"%s" in body else body
                self._bad_futures.append(self.producer.send(self.topic, key=name.encode(), value=value))
                self.sent.records += 1
            i += 1
            self.sent.steps = i
            self._halt.wait(max(0.0, t0 + i / self.steps_per_s - time.monotonic()))
