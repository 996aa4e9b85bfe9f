#!/usr/bin/env python
"""End-to-end throughput and latency of ``streamvae run`` on a real Kafka broker, against
baselines measured in the same run on the same records.

One run, on the SAME N pre-produced records (default 200,000) from 100 entities (F=8
features, W=32 window, stride 1, L=10 samples; a model trained here by ``streamvae train``
on correlated sinusoids + noise), measures:

(a) raw_consume_per_s   a kafka-python consumer built by ``make_consumer`` with the daemon's
                        group settings (fresh group id) drains the topic, calling ``poll``
                        exactly as the daemon does (same timeout and max_records) and touching
                        each record's value, nothing else;
(b) offline_per_s       the same bytes, no Kafka: ``Intake.decode`` (as the daemon
                        decodes) and ``StreamPipeline.process`` (built by
                        ``build_pipeline``) in batches of max_poll_records, decoding lazily
                        inside ``process`` as the daemon does, in this process with the
                        daemon's TensorFlow threading (one thread);
(c) e2e_per_s           the real daemon (``streamvae run`` as a subprocess, fresh group id)
                        drains the topic: decode, window, score, threshold, publish alerts
                        (acks=all), commit. Timed from daemon-ready (/healthz answers) to the
                        moment the committed ``scored_to`` metadata of every partition reaches
                        the end offsets (group offsets polled every 0.2 s);
(d) model_only_per_s    ``VAEDetector.score(x, detail=False)`` alone (the pipeline's one call
                        per batch: scores only, shares are asked for flagged windows
                        apart) on the very windows (b) scores, batch by
                        batch (the arrays one poll-sized batch completed: max_poll_records
                        windows once the entities are warm, stride 1), each scored again right
                        after (b) processed it and timed apart, so both see the same load,
                        heap and cache. For reference the table also shows it alone, cycling
                        through 10 such batches, before and after (b). Rates are windows/s;
                        offline and e2e are records/s (one window per record once each
                        entity has W readings: 196,900 windows for 200,000 records);
(e) latency             a fresh topic and group, the daemon started, then records produced
                        at a fixed rate of 0.5 x e2e_per_s for --latency-seconds (after
                        --latency-warmup s, left out) by a load generator in its own
                        process (--load-generator): by default the Java Kafka client
                        (scripts/loadgen/PacedProducer.java, compiled here against the
                        broker's jars), else kafka-python's producer built by
                        ``make_producer``; both acks=all, linger 5 ms, one request in
                        flight; p50/p99 of produce -> score.

(a) and (c) include the consumer's start and group join, as the brief defines them; the
table also shows both rates counted from the first batch ("steady"). (b) and (d) run in
this process after ``settle_runtime()`` (gc.freeze, the young generation's threshold, a
1 ms GIL switch interval), as ``Daemon.run`` does before its loop.

How (e) is measured. The daemon exposes nothing per record, and a produce -> committed-
offset poll only bounds the score time from above (it adds the alert flush, the commit
round trip and half the polling interval). So the latency run starts the UNMODIFIED daemon
code (``streamvae.cli.main(["run", "--config", ...])``) through a small shim (``_SHIM``
below) that wraps two methods from outside: ``StreamPipeline.process`` notes the wall
clock when it returns (the batch's windows are scored: score, threshold and episodes
done), and ``Daemon.handle`` notes when it starts (``poll`` has returned the batch) and
returns (alerts acknowledged, offsets committed), and each record's two stamps: a header
``sent_us`` the producer sets to the wall clock (microseconds) at ``send()``, and the
record timestamp, the broker's append time (the topic is LogAppendTime; whole ms). All
processes share one clock. So per record: produce -> score = t(process returned) -
t(send); produce -> committed = t(handle returned) - t(send) (the daemon commits offsets at
most every group.commit_interval_ms, so this is when the batch was done, its alerts
acknowledged, not when its offsets were committed); produce -> poll returned = producer,
broker, fetch, and waiting for the daemon to finish the batch before; produce -> broker
append = the producer's share (linger 5 ms, one request in flight). The shim adds one
list comprehension per poll.

Everything shares the machine's cores: the broker JVM, the daemon, and in (e) also the
load generator, which stands in for the plant's producers (on other machines in
production). kafka-python's producer costs ~0.4 of a core at ~6,000 records/s here, the
Java client ~0.17; the table shows each one's CPU share during (e).

(c') with ``--delivery both``: (c) again with ``group.delivery = "exactly_once"`` (one
Kafka transaction per poll: alerts, dead letters and the offset commit), on the same
records, a fresh group and fresh alerts / dead-letter topics; the table shows its rate
and its ratio to (c).

Prints a table, then one JSON line (last) with raw_consume_per_s, model_only_per_s,
offline_per_s, e2e_per_s, ratio_offline_model, ratio_e2e_offline, p50_latency_ms,
p99_latency_ms (produce -> score), records, entities, and more (with ``--delivery both``:
e2e_exactly_once_per_s and ratio_exactly_once_at_least_once; null otherwise).

    .venv/bin/python scripts/bench_e2e.py [--records 200000] [--bootstrap HOST:PORT] [--model DIR] [--delivery both]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from streamvae.config import Config, load_config  # noqa: E402
from streamvae.kafka.clients import make_consumer, make_producer  # noqa: E402
from streamvae.testing.broker import kafka_jars, use_broker  # noqa: E402
from streamvae.testing.procs import DaemonProc, cpu_seconds, run_cmd, streamvae_cmd, write_config  # noqa: E402
from streamvae.testing.topics import Cluster, Topics  # noqa: E402

FEATURES = tuple(f"s{i}" for i in range(8))
WINDOW = 32
T0 = 1_700_000_000.0

# Runs the unmodified daemon with two outside wrappers; see the module docstring, (e).
_SHIM = r"""
import json, sys, time
from streamvae.core.pipeline import StreamPipeline
from streamvae.service.daemon import Daemon
from streamvae.cli import main

out_path, config = sys.argv[1], sys.argv[2]
batches = []
scored_at = [0.0]
_process, _handle = StreamPipeline.process, Daemon.handle

def process(self, readings, now=None, size=None):
    res = _process(self, readings, now, size)
    scored_at[0] = time.time()
    return res

def handle(self, consumer, producer, batch):
    start = time.time()
    scored_at[0] = 0.0
    _handle(self, consumer, producer, batch)
    done = time.time()
    # per record: the producer's send time (header, microseconds) and the broker's append time (ms)
    batches.append((start, scored_at[0], done,
                    [(int(r.headers[0][1]) if r.headers else 0, r.timestamp) for recs in batch.values() for r in recs]))

StreamPipeline.process, Daemon.handle = process, handle
try:
    rc = main(["run", "--config", config])
finally:
    with open(out_path, "w") as fh:
        json.dump(batches, fh)
sys.exit(rc)
"""


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


def series(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 8) correlated sinusoids (one-minute cycle, a random phase) plus noise, one reading a second."""
    t = np.arange(n) + rng.uniform(0, 60)
    b = 2 * np.pi * t / 60
    x = np.stack([
        np.sin(b), 0.8 * np.sin(b + 0.6), 0.5 * np.sin(b) + 0.5 * np.cos(b + 0.3) + 2.0, np.cos(b),
        np.sin(2 * b), 0.3 * np.sin(b) + 0.7 * np.cos(2 * b + 1.0), 1.5 * np.sin(b + 1.2) - 1.0, np.sin(b) * np.cos(b),
    ], axis=1)
    return x + 0.1 * rng.standard_normal(x.shape)


def entity_name(e: int) -> str:
    return f"pump-{e:03d}"


def make_records(n_records: int, n_entities: int, seed: int) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """Round-robin over entities, each entity one reading per event-time second.

    Returns keys, JSON values (bytes) and the (entities, per_entity, F) values array."""
    per = -(-n_records // n_entities)
    rng = np.random.default_rng(seed)
    data = np.round(np.stack([series(per, rng) for _ in range(n_entities)]), 4)
    names = [entity_name(e) for e in range(n_entities)]
    rows = data.tolist()
    keys: list[bytes] = []
    values: list[bytes] = []
    for k in range(per):
        for e in range(n_entities):
            if len(values) == n_records:
                break
            keys.append(names[e].encode())
            values.append(orjson.dumps({"entity": names[e], "ts": T0 + k, "values": dict(zip(FEATURES, rows[e][k]))}))
    return keys, values, data


def train_model(work: Path, epochs: int) -> tuple[Path, float]:
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
    out = work / "model"
    cmd = [*streamvae_cmd(), "train", *[a for p in csvs for a in ("--csv", str(p))], "--out", str(out),
           "--window", str(WINDOW), "--encoder", "128,64", "--latent", "16", "--samples", "10",
           "--epochs", str(epochs), "--seed", "1", "--max-gap", "30"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        sys.exit(f"streamvae train failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------
# Kafka helpers
# ----------------------------------------------------------------------------------------


def bench_topics(bootstrap: str, partitions: int, tag: str, append_time: bool = False) -> Topics:
    """uuid-named ``bench-<tag>-sensors-<uuid>`` and its alerts / dead-letter topics.

    ``append_time``: record timestamps are the broker's append time (LogAppendTime)."""
    conf = {"message.timestamp.type": "LogAppendTime"} if append_time else None
    return Topics(bootstrap, partitions, prefix=f"bench-{tag}-", input_configs=conf)


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


def produce_bulk(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> float:
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


# ----------------------------------------------------------------------------------------
# the measurements
# ----------------------------------------------------------------------------------------


def measure_raw_consume(cfg: Config, n_records: int) -> dict[str, float]:
    g = replace(cfg.group, id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    c = make_consumer(cfg.kafka, g, [cfg.topics.input])
    n = 0
    nbytes = 0
    t_first = None
    n_first = 0
    polls = 0
    try:
        deadline = time.monotonic() + 300
        while n < n_records and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=g.poll_timeout_ms, max_records=g.max_poll_records)
            if not batch:
                continue
            polls += 1
            for recs in batch.values():
                for rec in recs:
                    nbytes += len(rec.value)
                    n += 1
            if t_first is None:
                t_first, n_first = time.perf_counter(), n
        t_end = time.perf_counter()
    finally:
        c.close(autocommit=False)
    if n < n_records:
        raise RuntimeError(f"raw consumer read {n} of {n_records} records in 300 s")
    assert t_first is not None
    return {"per_s": n / (t_end - t0), "steady_per_s": (n - n_first) / (t_end - t_first), "seconds": t_end - t0,
            "mean_poll": n / polls, "mb_per_s": nbytes / (t_end - t0) / 1e6}


def load_detector(cfg: Config) -> Any:
    from streamvae.model import configure_threads
    from streamvae.service.runtime import settle_runtime

    configure_threads(1)  # as `streamvae run` does
    from streamvae.model.artifact import load, resolve

    det = load(resolve(cfg.model.path)).warmup(cfg.group.max_poll_records)
    settle_runtime()  # as Daemon.run does before its loop
    return det


class _LastBatch:
    """The detector as the pipeline's scorer, keeping the windows of the last batch it
    scored (a big batch comes in parts, see ``StreamPipeline``; the calls with
    ``detail``, for the shares of flagged windows, are not the batch's scoring)."""

    def __init__(self, det: Any) -> None:
        self.det, self.names, self.version_, self.parts = det, det.names, det.version_, []

    def score(self, x: Any, detail: bool = True) -> Any:
        if not detail:
            self.parts.append(x)
        return self.det.score(x, detail)

    def take(self) -> Any:
        parts, self.parts = self.parts, []
        return None if not parts else parts[0] if len(parts) == 1 else np.concatenate(parts)


def measure_offline(cfg: Config, det: Any, keys: list[bytes], values: list[bytes]) -> dict[str, Any]:
    """Decode (``Intake.decode``, as the daemon) + StreamPipeline.process per batch of
    max_poll_records, decoding lazily inside ``process`` as the daemon does (``Daemon._readings``).

    Interleaved with it, (d): after each batch, ``det.score(x, detail=False)`` again on the
    very windows that batch completed, in one call of the batch's size (the pipeline splits
    a big batch in parts overlapped with its own work), timed apart: the model-only rate under
    the same conditions (load, heap, cache) as the pipeline's, batch by batch."""
    from streamvae.core.records import RecordDecoder
    from streamvae.core.compose import build_pipeline
    from streamvae.service.intake import Intake

    pipe = build_pipeline(cfg, det)
    pipe.scorer = last = _LastBatch(det)
    intake = Intake(RecordDecoder(det.names, cfg.records.entities, max_future_s=cfg.records.max_future_s),
                    cfg.records.max_record_bytes)
    bs = cfg.group.max_poll_records
    t_process = t_model = 0.0
    n_windows = n_alerts = model_windows = 0
    bad = [0]

    def readings(ks: list[bytes], vs: list[bytes]) -> Any:
        now = time.time()
        for k, v in zip(ks, vs):
            got, why = intake.decode(k, v, now)
            if why is not None:
                bad[0] += 1
            yield from got

    for i in range(0, len(values), bs):
        ks, vs = keys[i:i + bs], values[i:i + bs]
        tb = time.perf_counter()
        res = pipe.process(readings(ks, vs), now=time.time(), size=len(vs))
        t_process += time.perf_counter() - tb
        n_windows += len(res.scored)
        n_alerts += len(res.alerts)
        bad[0] += len(res.rejected)
        x = last.take()
        if x is not None:
            td = time.perf_counter()
            det.score(x, detail=False)
            t_model += time.perf_counter() - td
            model_windows += len(x)
    return {"per_s": len(values) / t_process, "seconds": t_process, "windows": n_windows, "alerts": n_alerts,
            "rejected": bad[0], "pipeline": pipe, "model_per_s": model_windows / t_model, "model_s": t_model}


def measure_model_only(det: Any, data: np.ndarray, batch: int, seconds: float, n_batches: int = 10) -> dict[str, float]:
    """``det.score(x, detail=False)`` (the call the pipeline makes per batch) on the windows the pipeline scores, in the pipeline's order, cycling
    through ``n_batches`` distinct batches (one array reused would sit warm in the cache)."""
    from streamvae.core.windows import sliding_windows

    n_ent, per = data.shape[:2]
    wins = [sliding_windows(x, WINDOW, 1).values for x in data]  # per entity: window k ends at reading k + W - 1
    first = n_ent * (WINDOW - 1)  # the first record that completes a window
    total = min(batch * n_batches, n_ent * per - first)
    order = [(r % n_ent, r // n_ent - (WINDOW - 1)) for r in range(first, first + total)]
    flat = np.stack([wins[e][k] for e, k in order])
    batches = [flat[i:i + batch] for i in range(0, len(flat) - batch + 1, batch)] or [flat]
    for x in batches[:2]:
        det.score(x, detail=False)
    n = 0
    lat = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 5:
        x = batches[n % len(batches)]
        ta = time.perf_counter()
        det.score(x, detail=False)
        lat.append(time.perf_counter() - ta)
        n += len(x)
    dt = time.perf_counter() - t0
    return {"per_s": n / dt, "ms_per_batch": 1e3 * float(np.median(lat)), "batch": len(batches[0])}


def measure_e2e(cfg_path: Path, topics: Topics, group: str, n_records: int, log: Path) -> dict[str, Any]:
    ends = topics.end_offsets()
    assert sum(ends.values()) == n_records, (ends, n_records)
    d = DaemonProc(run_cmd(cfg_path), log, cwd=ROOT)
    k = Cluster(topics.bootstrap)
    try:
        t_ready = d.wait_ready(120.0)
        t_first = None
        n_first = 0
        deadline = time.monotonic() + 600
        while True:
            d.check_alive()
            done = k.scored_to(group, topics.input)
            now = time.perf_counter()
            total = sum(min(done.get(p, 0), e) for p, e in ends.items())
            if t_first is None and total > 0:
                t_first, n_first = now, total
            if total >= n_records:
                t_end = now
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon scored {total} of {n_records} in 600 s\n{d.log_tail()}")
            time.sleep(0.2)
        m = d.totals()
    finally:
        k.close()
        rc = d.stop()
    if rc != 0:
        raise RuntimeError(f"daemon exited with {rc}\n{d.log_tail()}")
    assert t_first is not None
    return {
        "per_s": n_records / (t_end - t_ready), "seconds": t_end - t_ready,
        "steady_per_s": (n_records - n_first) / (t_end - t_first) if t_end > t_first else float("nan"),
        "records_total": m.get("records_total", 0), "windows": m.get("windows_scored_total", 0),
        "batches": m.get("batches_total", 0), "alerts": m.get("alerts_total", 0),
        "dead_letters": m.get("dead_letters_total", 0),
    }


def paced_messages(partitions: list[int], rate: float, seconds: float, n_entities: int) -> list[tuple[bytes, int, bytes]]:
    """The (key, partition, value) of every record of the paced run, in sending order:
    entity j % n_entities sends its reading j // n_entities + 1 (reading 0 primed the
    windows); each key's partition is the one kafka-python's DefaultPartitioner picks."""
    from kafka.partitioner.default import murmur2

    total = int(rate * seconds)
    per = total // n_entities + 2
    rng = np.random.default_rng(7)
    data = np.round(np.stack([series(per, rng) for _ in range(n_entities)]), 4).tolist()
    names = [entity_name(e) for e in range(n_entities)]
    keys = [n.encode() for n in names]
    parts = sorted(partitions)
    part_of = [parts[(murmur2(k) & 0x7FFFFFFF) % len(parts)] for k in keys]
    msgs = []
    for j in range(total):
        e, k = j % n_entities, j // n_entities + 1
        msgs.append((keys[e], part_of[e], orjson.dumps({"entity": names[e], "ts": T0 + k, "values": dict(zip(FEATURES, data[e][k]))})))
    return msgs


def paced_produce(bootstrap: str, topic: str, rate: float, seconds: float, n_entities: int) -> None:
    """``--load-generator python``: produce ``rate`` records/s for ``seconds`` with
    ``make_producer`` (the project's producer: acks=all, linger 5 ms), each record with a
    ``sent_us`` header (wall clock at ``send()``). Runs in its own small process (no
    TensorFlow, no big heap: a garbage collection of the benchmark's heap would stall the
    producer's sender thread and show up as latency). Prints one JSON line: wall-clock
    start, records sent, seconds taken, CPU seconds."""
    from streamvae.config import KafkaConfig

    prod = make_producer(KafkaConfig(bootstrap_servers=bootstrap, client_id="streamvae-bench-producer"))
    # The messages are made before the clock starts: this process shares the 2 cores
    # with the broker and the daemon.
    msgs = paced_messages(list(prod.partitions_for(topic)), rate, seconds, n_entities)
    total = len(msgs)
    sent = 0
    cpu0 = time.process_time()
    t_start_wall = time.time()
    t0 = time.perf_counter()
    while sent < total:  # record j is due at t0 + j / rate
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            key, part, value = msgs[sent]
            prod.send(topic, key=key, value=value, partition=part, headers=[("sent_us", b"%d" % (time.time() * 1e6))])
            sent += 1
        time.sleep(0.001)
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    prod.flush(30)
    prod.close(10)
    print(json.dumps({"t_start_wall": t_start_wall, "sent": sent, "seconds": took, "cpu_s": cpu}))


def java_load_generator(work: Path) -> list[str]:
    """Compile scripts/loadgen/PacedProducer.java against the Kafka jars the local broker
    runs from (fetched once into the cache by deploy/kafka/broker.py); the command that
    runs it."""
    libs = kafka_jars()
    out = work / "loadgen"
    out.mkdir(exist_ok=True)
    cp = f"{libs}/*"
    r = subprocess.run(["javac", "-cp", cp, "-d", str(out), str(ROOT / "scripts" / "loadgen" / "PacedProducer.java")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"javac failed:\n{r.stderr[-3000:]}")
    # a small heap, the serial collector and the C1 compiler only: the generator should
    # take as little of the 2 cores as it can
    return ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{out}{os.pathsep}{cp}", "PacedProducer"]


class OtherLoad:
    """CPU used by processes outside this benchmark's process tree while a phase runs, in
    cores (averaged): on a shared 2-core machine it says how far to trust that phase.
    Counts processes alive at both ends of the phase (a given --bootstrap broker included)."""

    def __init__(self) -> None:
        self.by_phase: dict[str, float] = {}
        self._t0 = 0.0
        self._snap0: dict[tuple[int, str], float] = {}

    @staticmethod
    def _snapshot() -> tuple[dict[tuple[int, str], float], dict[int, int]]:
        cpu, parent = {}, {}
        tck = os.sysconf("SC_CLK_TCK")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(d)
            parent[pid] = int(f[1])
            cpu[(pid, f[19])] = (int(f[11]) + int(f[12])) / tck  # keyed by (pid, start time)
        return cpu, parent

    def start(self) -> None:
        self._snap0, _ = self._snapshot()
        self._t0 = time.perf_counter()

    def stop(self, phase: str) -> float:
        snap1, parent = self._snapshot()
        dt = time.perf_counter() - self._t0
        me = os.getpid()

        def ours(pid: int) -> bool:
            seen = 0
            while pid > 1 and seen < 64:
                if pid == me:
                    return True
                pid, seen = parent.get(pid, 0), seen + 1
            return False

        used = sum(c - self._snap0[k] for k, c in snap1.items() if k in self._snap0 and not ours(k[0]))
        self.by_phase[phase] = used / dt
        return used / dt


def measure_latency(cfg_path: Path, topics: Topics, group: str, rate: float, seconds: float, warmup: float,
                    n_entities: int, work: Path, log: Path, broker_pid: int | None = None,
                    java: list[str] | None = None) -> dict[str, Any]:
    """(e); ``java``: the Java load generator's command (see ``java_load_generator``), else
    kafka-python's producer (``paced_produce``) sends the records."""
    out = work / f"latency-{uuid.uuid4().hex[:6]}.json"
    if java is not None:  # the messages, written before the daemon starts
        msg_file = work / "paced-messages.bin"
        with open(msg_file, "wb") as fh:
            for key, part, value in paced_messages(list(range(topics.partitions)), rate, seconds + warmup, n_entities):
                fh.write(struct.pack(">ii", part, len(key)) + key + struct.pack(">i", len(value)) + value)
    d = DaemonProc([sys.executable, "-c", _SHIM, str(out), str(cfg_path)], log, cwd=ROOT)
    try:
        d.wait_ready(120.0)
        # One reading per entity, then wait until the daemon has joined and committed them:
        # the paced run starts with the consumer assigned and polling.
        prod = KafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
        rng = np.random.default_rng(6)
        for e in range(n_entities):
            prod.send(topics.input, key=entity_name(e).encode(), value=orjson.dumps(
                {"entity": entity_name(e), "ts": T0, "values": dict(zip(FEATURES, series(1, rng)[0].round(4).tolist()))}))
        prod.flush(30)
        prod.close(10)
        topics.wait_caught_up(120.0, d, group, poll=0.05)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_e2e as b; "
                "b.paced_produce(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))")
        if java is not None:
            cmd = [*java, topics.bootstrap, topics.input, str(rate), str(msg_file)]
        else:
            cmd = [sys.executable, "-c", code, str(ROOT / "scripts"), topics.bootstrap, topics.input, str(rate),
                   str(seconds + warmup), str(n_entities)]
        cpu0 = (cpu_seconds(d.proc.pid), cpu_seconds(broker_pid), time.perf_counter())
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 120)
        if r.returncode != 0:
            raise RuntimeError(f"paced producer failed:\n{r.stderr[-3000:]}")
        cpu1 = (cpu_seconds(d.proc.pid), cpu_seconds(broker_pid), time.perf_counter())
        info = json.loads(r.stdout.strip().splitlines()[-1])
        topics.wait_caught_up(120.0, d, group, poll=0.1)
    finally:
        rc = d.stop()
    if rc != 0:
        raise RuntimeError(f"latency daemon exited with {rc}\n{d.log_tail()}")
    batches = json.loads(out.read_text())
    cut_us = (info["t_start_wall"] + warmup) * 1e6
    appended, polled, scored, committed, sizes = [], [], [], [], []
    for t_start, t_score, t_done, stamps in batches:
        st = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)
        st = st[st[:, 0] >= cut_us]
        if len(st) == 0:
            continue
        sent, append = st[:, 0] / 1e3, st[:, 1]  # ms
        sizes.append(len(stamps))
        appended.append(append - sent)
        polled.append(t_start * 1e3 - sent)
        if t_score > 0:
            scored.append(t_score * 1e3 - sent)
        committed.append(t_done * 1e3 - sent)
    s, c, p, a = (np.concatenate(x) for x in (scored, committed, polled, appended))

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q))

    return {"rate": rate, "achieved_rate": info["sent"] / info["seconds"], "measured": len(s), "batches": len(sizes),
            "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
            "p50": pct(s, 50), "p99": pct(s, 99), "max": float(s.max()),
            "poll_p50": pct(p, 50), "poll_p99": pct(p, 99), "append_p50": pct(a, 50), "append_p99": pct(a, 99),
            "commit_p50": pct(c, 50), "commit_p99": pct(c, 99),
            # share of one core while producing (the producer's from its own clock, after start-up)
            "cpu_daemon": (cpu1[0] - cpu0[0]) / (cpu1[2] - cpu0[2]), "cpu_broker": (cpu1[1] - cpu0[1]) / (cpu1[2] - cpu0[2]),
            "cpu_producer": info["cpu_s"] / info["seconds"]}


# ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000, help="records pre-produced and drained by (a), (b), (c)")
    ap.add_argument("--entities", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the input topic (default 4)")
    ap.add_argument("--max-poll-records", type=int, default=None, help="group.max_poll_records (default: the config default)")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting a LocalBroker")
    ap.add_argument("--model", default=None, help="use this trained model artifact instead of training one")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs when training the model (default 15)")
    ap.add_argument("--model-seconds", type=float, default=3.0, help="measuring time of (d)")
    ap.add_argument("--latency-seconds", type=float, default=25.0, help="paced production time of (e), after the warm-up")
    ap.add_argument("--latency-warmup", type=float, default=10.0,
                    help="seconds of (e) produced but left out at the start (windows filling, the broker JVM warming up)")
    ap.add_argument("--latency-rate", type=float, default=None, help="records/s for (e) (default 0.5 x e2e_per_s)")
    ap.add_argument("--load-generator", choices=("java", "python"), default="java",
                    help="who sends (e)'s records: the Java Kafka client (default; the plant's producers run "
                         "elsewhere, and this one takes little of the 2 cores) or kafka-python's producer")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--delivery", choices=("at_least_once", "both"), default="at_least_once",
                    help="both: measure (c) again with group.delivery = exactly_once and print the ratio")
    args = ap.parse_args()

    try:
        import crc32c  # noqa: F401
        from kafka.record import util as _kutil
        crc_impl = "crc32c (C)" if _kutil.calc_crc32c.__defaults__[0] is crc32c.crc32c else "pure Python"
    except ImportError:
        crc_impl = "pure Python (crc32c not installed)"

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    notes: list[str] = []
    broker = None
    try:
        # model
        if args.model:
            model, train_s = Path(args.model), 0.0
        else:
            model, train_s = train_model(work, args.epochs)
        bootstrap, broker = use_broker(args.bootstrap)
        keys, values, data = make_records(args.records, args.entities, seed=2026)
        topics = bench_topics(bootstrap, args.partitions, "e2e")
        produce_s = produce_bulk(bootstrap, topics.input, keys, values)
        ends = topics.end_offsets()
        if sum(ends.values()) != args.records:
            sys.exit(f"topic holds {sum(ends.values())} records, expected {args.records}")

        group = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        cfg_path = bench_config(topics, work / "e2e.toml", model, group,
                                args.max_poll_records or Config().group.max_poll_records)
        cfg = load_config(cfg_path)
        bs = cfg.group.max_poll_records

        other = OtherLoad()
        other.start()
        raw = measure_raw_consume(cfg, args.records)
        other.stop("a")
        det = load_detector(cfg)
        # (d) interleaved with (b), on the same windows (see measure_offline); and, for
        # reference, alone on 10 batches cycled, before and after (b).
        other.start()
        mo_before = measure_model_only(det, data, bs, args.model_seconds)
        other.stop("d_alone_before")
        other.start()
        off = measure_offline(cfg, det, keys, values)
        other.stop("b")
        other.start()
        mo_after = measure_model_only(det, data, bs, args.model_seconds)
        other.stop("d_alone_after")
        model_only = {"per_s": off["model_per_s"], "seconds": off["model_s"]}
        del off["pipeline"]
        other.start()
        e2e = measure_e2e(cfg_path, topics, group, args.records, work / "daemon-e2e.log")
        other.stop("c")
        eo = None
        if args.delivery == "both":
            eo_group = f"bench-eo-{uuid.uuid4().hex[:8]}"
            eo_cfg = bench_config(topics, work / "eo.toml", model, eo_group, bs, "exactly_once",
                                  outputs=bench_topics(bootstrap, 1, "eo"))
            other.start()
            eo = measure_e2e(eo_cfg, topics, eo_group, args.records, work / "daemon-eo.log")
            other.stop("c_eo")

        lat = None
        if not args.skip_latency:
            rate = args.latency_rate or 0.5 * e2e["per_s"]
            lt = bench_topics(bootstrap, args.partitions, "lat", append_time=True)
            lgroup = f"bench-lat-{uuid.uuid4().hex[:8]}"
            lcfg = bench_config(lt, work / "lat.toml", model, lgroup, bs)
            java = java_load_generator(work) if args.load_generator == "java" else None
            other.start()
            lat = measure_latency(lcfg, lt, lgroup, rate, args.latency_seconds, args.latency_warmup, args.entities,
                                  work, work / "daemon-lat.log", broker_pid=broker.pid if broker is not None else None,
                                  java=java)
            other.stop("e")
    except BaseException:
        print(f"bench_e2e failed; daemon logs and configs kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        if broker is not None:
            broker.stop()

    if e2e["records_total"] != args.records:
        notes.append(f"daemon /metrics records_total={e2e['records_total']:.0f} != {args.records}")
    r_om = off["per_s"] / model_only["per_s"]
    r_eo = e2e["per_s"] / off["per_s"]
    mo = model_only

    print(f"streamvae end to end: {args.records:,} records, {args.entities} entities, {args.partitions} partitions; "
          f"F={len(FEATURES)} W={WINDOW} stride 1 L=10, encoder 128,64 latent 16; max_poll_records={bs}")
    print(f"broker: {'given ' + bootstrap if args.bootstrap else 'LocalBroker ' + bootstrap}; kafka-python CRC-32C: {crc_impl}; "
          f"cores: {os.cpu_count()}; model {'given' if args.model else f'trained in {train_s:.0f}s'}; "
          f"pre-produced in {produce_s:.1f}s\n")
    ol = other.by_phase
    print(f"{'measure':<54} {'records/s':>11} {'seconds':>8} {'other':>6}  notes")
    print("-" * 120)
    print(f"{'(a) raw consume (make_consumer, poll, no processing)':<54} {raw['per_s']:>11,.0f} {raw['seconds']:>8.2f} {ol['a']:>6.2f}  "
          f"steady {raw['steady_per_s']:,.0f}/s after 1st poll; {raw['mean_poll']:.0f} recs/poll; {raw['mb_per_s']:.1f} MB/s")
    print(f"{'(d) model only (score, no detail; windows of (b))':<54} {mo['per_s']:>11,.0f} {mo['seconds']:>8.2f} "
          f"{ol['b']:>6.2f}  interleaved with (b), per poll batch; alone, {bs}-window batches before/after (b): "
          f"{mo_before['per_s']:,.0f} / {mo_after['per_s']:,.0f} ({mo_before['ms_per_batch']:.0f} ms per batch)")
    print(f"{'(b) offline: orjson + RecordDecoder + StreamPipeline':<54} {off['per_s']:>11,.0f} {off['seconds']:>8.2f} {ol['b']:>6.2f}  "
          f"decoded inside process; {off['windows']:,} windows, {off['alerts']} alerts")
    print(f"{'(c) e2e: streamvae run, ready -> all scored_to committed':<54} {e2e['per_s']:>11,.0f} {e2e['seconds']:>8.2f} {ol['c']:>6.2f}  "
          f"steady {e2e['steady_per_s']:,.0f}/s after 1st commit; {e2e['batches']:.0f} polls, {e2e['windows']:,.0f} windows, "
          f"{e2e['alerts']:.0f} alerts")
    if eo is not None:
        label = "(c') e2e, group.delivery = exactly_once"
        print(f"{label:<54} {eo['per_s']:>11,.0f} {eo['seconds']:>8.2f} "
              f"{ol['c_eo']:>6.2f}  steady {eo['steady_per_s']:,.0f}/s; {eo['batches']:.0f} transactions; "
              f"x{eo['per_s'] / e2e['per_s']:.3f} of (c)")
    print("other: CPU cores used meanwhile by processes outside this benchmark (another session's jobs; a --bootstrap broker)")
    worst = max(ol.values())
    if worst > 0.25:
        notes.append(f"other processes used up to {worst:.2f} of the 2 cores during a phase: rates and latencies of that "
                     "phase are lower / higher than on a quiet machine; run again when it is quiet")
    print()
    print(f"{'ratio':<40} {'value':>7}  target")
    print(f"{'offline / model only':<40} {r_om:>7.3f}  >= 0.7  {'MET' if r_om >= 0.7 else 'MISSED'}")
    print(f"{'e2e / offline':<40} {r_eo:>7.3f}  >= 0.6  {'MET' if r_eo >= 0.6 else 'MISSED'}")
    print(f"{'e2e / raw consume':<40} {e2e['per_s'] / raw['per_s']:>7.3f}")
    if lat is not None:
        print()
        print(f"(e) latency at {lat['rate']:,.0f} records/s ({'given' if args.latency_rate else '0.5 x e2e'}; "
              f"achieved {lat['achieved_rate']:,.0f}/s; other {ol.get('e', float('nan')):.2f}), "
              f"{args.latency_seconds:.0f}s after {args.latency_warmup:.0f}s warm-up: {lat['measured']:,} records in "
              f"{lat['batches']} polls ({lat['mean_batch']:.0f} records/poll)")
        print(f"{'':<4}{'':<36} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{'':<4}{'produce -> score (process returned)':<36} {lat['p50']:>8.1f} {lat['p99']:>8.1f}  "
              f"target p99 < 50 ms  {'MET' if lat['p99'] < 50 else 'MISSED'}")
        print(f"{'':<4}{'produce -> committed (upper bound)':<36} {lat['commit_p50']:>8.1f} {lat['commit_p99']:>8.1f}")
        print(f"{'':<4}{'produce -> poll returned':<36} {lat['poll_p50']:>8.1f} {lat['poll_p99']:>8.1f}  (Kafka + waiting for the batch before)")
        print(f"{'':<4}{'produce -> broker append':<36} {lat['append_p50']:>8.1f} {lat['append_p99']:>8.1f}  (producer linger + request)")
        print(f"    CPU while producing, share of one core: daemon {lat['cpu_daemon']:.2f}, producer {lat['cpu_producer']:.2f}, "
              f"broker {lat['cpu_broker']:.2f} (2 cores in all)")
    for n in notes:
        print(f"note: {n}")
    print(json.dumps({
        "raw_consume_per_s": round(raw["per_s"]),
        "model_only_per_s": round(mo["per_s"]),
        "offline_per_s": round(off["per_s"]),
        "e2e_per_s": round(e2e["per_s"]),
        "ratio_offline_model": round(r_om, 3),
        "ratio_e2e_offline": round(r_eo, 3),
        "p50_latency_ms": None if lat is None else round(lat["p50"], 1),
        "p99_latency_ms": None if lat is None else round(lat["p99"], 1),
        "p50_commit_latency_ms": None if lat is None else round(lat["commit_p50"], 1),
        "p99_commit_latency_ms": None if lat is None else round(lat["commit_p99"], 1),
        "latency_rate_per_s": None if lat is None else round(lat["rate"]),
        "latency_cpu_share": None if lat is None else {k: (round(lat[f"cpu_{k}"], 2) if lat[f"cpu_{k}"] == lat[f"cpu_{k}"] else None) for k in ("daemon", "producer", "broker")},
        "model_only_alone_before_after_per_s": [round(mo_before["per_s"]), round(mo_after["per_s"])],
        "raw_consume_steady_per_s": round(raw["steady_per_s"]),
        "e2e_steady_per_s": round(e2e["steady_per_s"]),
        "records": args.records,
        "entities": args.entities,
        "partitions": args.partitions,
        "max_poll_records": bs,
        "crc32c": crc_impl,
        "other_load_cores": {k: round(v, 2) for k, v in ol.items()},
        "e2e_exactly_once_per_s": None if eo is None else round(eo["per_s"]),
        "ratio_exactly_once_at_least_once": None if eo is None else round(eo["per_s"] / e2e["per_s"], 3),
    }))


if __name__ == "__main__":
    main()
