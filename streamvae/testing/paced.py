"""A live feed at a fixed rate, and what the daemon does with it: latency and CPU.

``scripts/bench_e2e.py`` measures its latency rows and its CPU-per-record rows here:
:func:`measure_paced` starts a daemon, primes every entity, then a load generator in its
own process sends records at ``rate`` per second for ``warmup + seconds`` (the warm-up is
left out of every figure). The records are :func:`series` readings of ``n_entities``
pumps, round robin; with ``spike_every`` one reading in that many is a spike, so alerts
flow and their latency can be measured too.

Latency (``latency=True``). The daemon runs unmodified under
scripts/latencyshim.py, which notes per poll when ``poll`` returned, when
the batch's windows were scored and when the batch was done, and per record its
``sent_us`` header (the generator's wall clock at ``send()``) and its broker append time
(the input topic is LogAppendTime). All processes share one clock, so per record:
produce -> score = t(scored) - t(sent). For alerts: the shim notes each alert's id and
the record that completed its window; the alerts topic is LogAppendTime too, so
produce -> alert on topic = t(alert appended) - t(that record sent).

CPU (both modes): the daemon's CPU seconds (``/proc/<pid>/stat``) over the measured
seconds, as a share of one core and per 1,000 records; beside it the broker's, the load
generator's, the rest of the machine's (``other``) and what was left ``idle``, in cores
(streamvae.testing.benchtools.CpuWatch).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.testing.benchtools import CpuWatch
from streamvae.testing.loadgen import finish, with_producer, write_messages
from streamvae.testing.procs import ROOT, DaemonProc, run_cmd
from streamvae.testing.topics import Topics

FEATURES = tuple(f"s{i}" for i in range(8))
WINDOW = 32
T0 = 1_700_000_000.0
SHIM = ROOT / "scripts" / "latencyshim.py"
SPIKE = 12.0  # added to every feature of a spike reading (the series' range is about +-2)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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


def paced_messages(partitions: Sequence[int], rate: float, seconds: float, n_entities: int,
                   spike_every: int = 0) -> list[tuple[bytes, int, bytes]]:
    """The (key, partition, value) of every record of a paced run, in sending order:
    entity j % n_entities sends its reading j // n_entities + 1 (reading 0 primed the
    windows: :func:`prime`); each key's partition is the one kafka-python's
    DefaultPartitioner picks. ``spike_every``: record j is a spike when j % spike_every
    == spike_every - 1 (0: none)."""
    from kafka.partitioner.default import murmur2

    total = int(rate * seconds)
    per = total // n_entities + 2
    rng = np.random.default_rng(7)
    data = np.round(np.stack([series(per, rng) for _ in range(n_entities)]), 4)
    names = [entity_name(e) for e in range(n_entities)]
    keys = [n.encode() for n in names]
    parts = sorted(partitions)
    part_of = [parts[(murmur2(k) & 0x7FFFFFFF) % len(parts)] for k in keys]
    msgs = []
    for j in range(total):
        e, k = j % n_entities, j // n_entities + 1
        row = data[e][k] + (SPIKE if spike_every and j % spike_every == spike_every - 1 else 0.0)
        value = _json({"entity": names[e], "ts": T0 + k, "values": dict(zip(FEATURES, np.round(row, 4).tolist()))})
        msgs.append((keys[e], part_of[e], value))
    return msgs


def paced_produce(bootstrap: str, topic: str, rate: float, seconds: float, n_entities: int, spike_every: int) -> None:
    """The Python load generator: ``rate`` records/s for ``seconds`` with ``make_producer``
    (the project's producer: acks=all, linger 5 ms), each record with a ``sent_us``
    header. Runs in its own small process (``python -m streamvae.testing.paced``). Prints
    one JSON line: wall-clock start, records sent, seconds taken, CPU seconds."""
    from streamvae.config import KafkaConfig
    from streamvae.kafka.produce import make_producer

    prod = make_producer(KafkaConfig(bootstrap_servers=bootstrap, client_id="streamvae-bench-producer"))
    # made before the clock starts: this process shares the cores with the broker and the daemon
    msgs = paced_messages(list(prod.partitions_for(topic)), rate, seconds, n_entities, spike_every)
    total, sent = len(msgs), 0
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


def prime(bootstrap: str, topic: str, n_entities: int) -> None:
    """One reading per entity (its reading 0), so the paced run starts with every entity known."""
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    rng = np.random.default_rng(6)
    for e in range(n_entities):
        prod.send(topic, key=entity_name(e).encode(), value=_json(
            {"entity": entity_name(e), "ts": T0, "values": dict(zip(FEATURES, series(1, rng)[0].round(4).tolist()))}))
    prod.flush(30)
    prod.close(10)


def measure_paced(cfg_path: Path, topics: Topics, group: str, rate: float, seconds: float, warmup: float,
                  n_entities: int, work: Path, log: Path, *, latency: bool = True, spike_every: int = 0,
                  broker_pid: int | None = None, java: list[str] | None = None) -> dict[str, Any]:
    """See the module doc. ``java``: the Java load generator's command (else kafka-python's
    producer sends). Returns the rate achieved, the daemon's (and broker's, producer's) CPU
    share over the measured seconds, CPU ms per 1,000 records, and with ``latency`` the
    percentiles of each stage (ms) and of produce -> alert on topic."""
    shim_out = work / f"latency-{uuid.uuid4().hex[:6]}.json"
    if java is not None:  # the messages, written before the daemon starts
        msg_file = work / f"paced-{uuid.uuid4().hex[:6]}.bin"
        write_messages(msg_file, paced_messages(range(topics.partitions), rate, seconds + warmup, n_entities, spike_every))
        cmd = [*java, topics.bootstrap, topics.input, str(rate), str(msg_file)]
    else:
        cmd = [sys.executable, "-m", "streamvae.testing.paced", topics.bootstrap, topics.input, str(rate),
               str(seconds + warmup), str(n_entities), str(spike_every)]
    daemon_cmd = [sys.executable, str(SHIM), str(shim_out), str(cfg_path)] if latency \
        else run_cmd(cfg_path)
    d = DaemonProc(daemon_cmd, log, cwd=ROOT)
    try:
        d.wait_ready(120.0)
        prime(topics.bootstrap, topics.input, n_entities)  # and wait until it is scored: the group is joined
        topics.wait_caught_up(120.0, d, group, poll=0.05)
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cpu = CpuWatch({"daemon": d.proc.pid, "broker": broker_pid})
        timer = threading.Timer(warmup, cpu.start)  # the warm-up is left out
        timer.start()
        try:
            info = finish(gen, seconds + warmup + 120)
        finally:
            timer.cancel()
        share = cpu.stop()
        topics.wait_caught_up(120.0, d, group, poll=0.1)
        totals = d.totals()
    finally:
        rc = d.stop()
    if rc != 0:
        raise RuntimeError(f"paced daemon exited with {rc}\n{d.log_tail()}")
    achieved = info["sent"] / info["seconds"]
    share = with_producer(share, info, info["seconds"])  # its own clock, over its whole run: the process is gone
    per_poll = totals.get("records_total", 0.0) / max(totals.get("batches_total", 0.0), 1.0)
    res: dict[str, Any] = {"rate": rate, "achieved_rate": achieved, "cpu": share, "records_per_poll": per_poll,
                           "cpu_ms_per_1000": 1e6 * share["daemon"] / achieved,
                           "cpu_ms_per_poll": 1e3 * share["daemon"] / achieved * per_poll}
    if latency:
        res.update(_latencies(json.loads(shim_out.read_text()), (info["t_start_wall"] + warmup) * 1e6, topics))
    return res


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def _after_cut(stamps: list[float], cut_us: float) -> npt.NDArray[np.float64]:
    """A batch's (sent us, broker append ms) rows of the records sent after ``cut_us``."""
    st = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)
    return st[st[:, 0] >= cut_us]


def _latencies(shim: dict[str, Any], cut_us: float, topics: Topics) -> dict[str, Any]:
    """Per stage, p50/p99/max in ms, of the records sent after ``cut_us`` (see the module doc)."""
    stage: dict[str, list[np.ndarray]] = {"score": [], "done": [], "poll": [], "append": []}
    sizes = []
    for t_poll, t_score, t_done, stamps in shim["batches"]:
        st = _after_cut(stamps, cut_us)
        if len(st) == 0:
            continue
        sent, append = st[:, 0] / 1e3, st[:, 1]  # ms
        sizes.append(len(stamps))
        stage["append"].append(append - sent)
        stage["poll"].append(t_poll * 1e3 - sent)
        if t_score > 0:
            stage["score"].append(t_score * 1e3 - sent)
        stage["done"].append(t_done * 1e3 - sent)
    out: dict[str, Any] = {"polls": len(sizes), "mean_batch": float(np.mean(sizes)) if sizes else 0.0}
    for name, parts in stage.items():
        a = np.concatenate(parts) if parts else np.empty(0)
        out[name] = {"n": len(a), "p50": pct(a, 50), "p99": pct(a, 99), "max": float(a.max()) if len(a) else float("nan")}
    appended = _append_times(topics.bootstrap, topics.alerts)
    lat = np.asarray([appended[aid] - sent_us / 1e3 for aid, sent_us in shim["alerts"]
                      if sent_us >= cut_us and aid in appended], dtype=np.float64)
    out["alert"] = {"n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": float(lat.max()) if len(lat) else float("nan")}
    out["cycle"] = _cycle(shim.get("cycles", []), cut_us)
    out["late"] = _late(shim["batches"], shim.get("cycles", []), cut_us)
    return out


def _late(batches: list[Any], cycles: list[Any], cut_us: float) -> float | None:
    """The share of the records sent after ``cut_us`` that came a batch late: they had
    reached the broker (their append time) before the poll before theirs began, and that
    poll did not bring them. A poll that finds records kafka-python fetched while the
    batch before was handled returns those without asking the broker for newer ones
    (streamvae/kafka/readahead.py). ``batches`` and ``cycles`` hold one row per batch,
    in order (scripts/latencyshim.py); a poll began at its row's time less its wall."""
    late = total = 0
    began = None  # when the poll before this one began (wall clock, ms)
    for (t_poll, _, _, stamps), cyc in zip(batches, cycles):
        st = _after_cut(stamps, cut_us)
        if began is not None and len(st):
            late += int((st[:, 1] < began).sum())
            total += len(st)
        began = (t_poll - cyc[1]) * 1e3
    return late / total if total else None


def _cycle(cycles: list[Any], cut_us: float) -> dict[str, float] | None:
    """Where one poll's time goes on the daemon's main thread, mean per poll that brought
    records after ``cut_us`` (see scripts/latencyshim.py): wall and CPU ms of the poll, of
    ``process`` and of the rest of the batch (alerts, delivery, commit, metrics), the
    cycle (poll + batch), the model calls' wall ms, and main-thread CPU us per record."""
    c = np.asarray([row for row in cycles if row[0] * 1e6 >= cut_us], dtype=np.float64).reshape(-1, 9)
    if not len(c):
        return None
    _, poll_w, poll_c, proc_w, proc_c, hand_w, hand_c, n, model_w = c.T

    def ms(a: np.ndarray) -> float:
        return round(1e3 * float(a.mean()), 2)

    return {"polls": len(c), "records_per_poll": round(float(n.mean()), 1),
            "poll_wall_ms": ms(poll_w), "poll_cpu_ms": ms(poll_c),
            "process_wall_ms": ms(proc_w), "process_cpu_ms": ms(proc_c),
            "rest_wall_ms": ms(hand_w - proc_w), "rest_cpu_ms": ms(hand_c - proc_c),
            "model_wall_ms": ms(model_w), "cycle_wall_ms": ms(poll_w + hand_w),
            "cpu_us_per_record": round(1e6 * float((poll_c + hand_c).sum() / n.sum()), 1)}


def _append_times(bootstrap: str, topic: str) -> dict[str, float]:
    """alert id -> the broker's append time (ms) of every record on the alerts topic."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        got: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    got[json.loads(r.value)["alert_id"]] = float(r.timestamp)
        return got
    finally:
        c.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    paced_produce(a[0], a[1], float(a[2]), float(a[3]), int(a[4]), int(a[5]))
