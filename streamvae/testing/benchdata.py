"""What the benchmarks share (scripts/bench_e2e.py, bench_memory.py, bench_scaleout.py):
their records, their model, their topics and the daemon's config for them.

The records are round-robin over entities, one reading per entity per event-time second,
of streamvae.testing.paced's correlated sinusoids; the model is trained on the same kind of
readings by the real ``streamvae train`` (W = 32, encoder 128,64, latent 16, L = 10).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from streamvae.kafka.codec import dumps
from streamvae.testing.paced import FEATURES, T0, WINDOW, entity_name, series
from streamvae.testing.procs import train, write_config
from streamvae.testing.topics import Topics


def make_records(n_records: int, n_entities: int, seed: int) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """Round-robin over entities, each entity one reading per event-time second
    (:class:`Feed`'s first ``n_records`` messages).

    Returns keys, JSON values (bytes) and the (entities, per_entity, F) values array."""
    per = -(-n_records // n_entities)
    feed = Feed(n_entities, per, 1, seed)
    msgs = feed.messages(0, per, limit=n_records)
    return [k for k, _, _ in msgs], [v for _, _, v in msgs], feed.data


def train_model(work: Path, epochs: int) -> tuple[Path, float]:
    """The benchmarks' model, trained in ``work/model`` on 3 x 6,000 readings; its
    directory and the seconds the training took."""
    rng = np.random.default_rng(123)
    csvs = []
    for j in range(3):
        p = work / f"train{j}.csv"
        with p.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts", *FEATURES])
            for i, row in enumerate(series(6000, rng)):
                w.writerow([int(T0) + j * 100_000 + i, *(f"{v:.4f}" for v in row)])
        csvs.append(p)
    t0 = time.perf_counter()
    out = train(csvs, work / "model", "--window", str(WINDOW), "--encoder", "128,64", "--latent", "16",
                "--samples", "10", "--epochs", str(epochs), "--seed", "1", "--max-gap", "30")
    return out, time.perf_counter() - t0


def bench_topics(bootstrap: str, partitions: int, tag: str, append_time: bool = False) -> Topics:
    """uuid-named ``bench-<tag>-sensors-<uuid>`` and its alerts / dead-letter topics.

    ``append_time``: the input's and the alerts' record timestamps are the broker's append
    time (LogAppendTime)."""
    conf = {"message.timestamp.type": "LogAppendTime"} if append_time else None
    return Topics(bootstrap, partitions, prefix=f"bench-{tag}-", input_configs=conf, alerts_configs=conf)


def bench_config(topics: Topics, path: Path, model: Path, group: str, max_poll_records: int,
                 delivery: str = "at_least_once", outputs: Topics | None = None) -> Path:
    """The daemon's config for one run: these topics (alerts and dead letters to
    ``outputs``' when given), ``group``, ``group.delivery``, the model; defaults otherwise."""
    sections = topics.config_sections(group)
    if outputs is not None:
        sections["topics"].update(alerts=outputs.alerts, dead_letter=outputs.dlq)
    sections["kafka"]["client_id"] = "streamvae-bench"
    sections["group"]["max_poll_records"] = max_poll_records
    sections["group"]["delivery"] = delivery
    sections.update({"model": {"path": str(model)}, "http": {"port": 0}})
    return write_config(path, sections)


def produce_bulk(bootstrap: str, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes]) -> float:
    """Produce everything as fast as the client goes; returns seconds."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024,
                      max_request_size=4 * 1024 * 1024)
    t0 = time.perf_counter()
    try:
        for k, v in zip(keys, values):
            p.send(topic, key=k, value=v)
        p.flush(120)
    finally:
        p.close(10)
    return time.perf_counter() - t0


class Feed:
    """Every entity's readings (:func:`~streamvae.testing.paced.series`, one a second),
    step by step: ``messages(a, b)`` are steps a..b-1 of every entity, entity by entity
    within a step, each keyed by the entity, in the partition kafka-python's default
    partitioner gives its key."""

    def __init__(self, n_entities: int, steps: int, partitions: int, seed: int = 2026) -> None:
        from kafka.partitioner.default import murmur2

        rng = np.random.default_rng(seed)
        self.steps = steps
        self.data = np.round(np.stack([series(steps, rng) for _ in range(n_entities)]), 4)
        self.names = [entity_name(e) for e in range(n_entities)]
        self.keys = [n.encode() for n in self.names]
        self.parts = [(murmur2(k) & 0x7FFFFFFF) % partitions for k in self.keys]

    def messages(self, first: int, end: int, limit: int | None = None) -> list[tuple[bytes, int, bytes]]:
        """Steps ``first``..``end``-1, at most ``limit`` messages."""
        out: list[tuple[bytes, int, bytes]] = []
        for step in range(first, end):
            for e, name in enumerate(self.names):
                if limit is not None and len(out) == limit:
                    return out
                value = {"entity": name, "ts": T0 + step, "values": dict(zip(FEATURES, self.data[e, step].tolist()))}
                out.append((self.keys[e], self.parts[e], dumps(value)))
        return out
