#!/usr/bin/env python
"""Scale-out: 1, 2 and 3 ``streamvae run`` processes in one consumer group on a
6-partition topic; throughput, latency and where the cores go, each against one process
in the same run.

One run, one broker, one model (trained here as scripts/bench_e2e.py trains it, or
``--model``), the same records for every group size: ``--records`` (default 100,000)
from 100 entities (F=8, W=32, stride 1, L=10; bench_e2e.py's data), each entity's
records in the partition its key hashes to (kafka-python's partitioner), so the
partitions hold unequal shares. For k in 1, 2, 3:

drain     k daemons (``streamvae run``, one config, a fresh group id) start at once on
          a fresh, empty 6-partition topic; once all are ready and the group is stable
          with k members, each holding partitions (DescribeGroups, polled every 50 ms),
          the Java Kafka client (scripts/loadgen/PacedProducer.java, which bench_e2e.py
          compiles; acks=all, linger 5 ms) sends all the records as fast as it can (a
          burst of about a second) and the daemons drain them. records_per_s = records
          / (the moment every partition's committed ``scored_to`` metadata reaches its
          end offset (polled every 0.1 s, as bench_e2e.py (c) waits) - the first send).
          ratio_to_one = records_per_s(k) / records_per_s(first size).
          Why not a topic filled before the daemons start: the daemons get ready one
          by one (each imports TensorFlow and loads the model, on the same 2 cores), the
          first starts consuming at once, and each later join moves partitions only
          after the members' next heartbeat (up to 3 s). Measured with a pre-filled
          topic of 40,000 records, the group of 3 was stable 3.4 s after the last
          daemon got ready, by when 28,000 records had been scored by the first ones:
          what was left measured the tail of an uneven drain, not the group.
balance   each daemon's records (its /metrics ``records_total``) and the bound the
          partitions set: records / the busiest daemon's records, the ratio the group
          would reach if every daemon ran at the one-process rate.
cores     from the load generator's launch to the end: CPU seconds of each daemon
          process, of the broker JVM (its pid from the LocalBroker, or the process
          listening on ``--bootstrap``'s port, found through /proc/net/tcp), of the load
          generator (its own count after its start-up), of this process (it polls the
          group's offsets) and of the whole machine (/proc/stat), each divided by that
          wall time: the share of a core each used. other = what the rest of the
          machine used (other sessions' jobs); idle = cores left unused.
latency   k fresh daemons on a fresh 6-partition topic, with ``topics.scores`` set (one
          record per scored window, naming the source partition and offset) on a
          scores topic whose record timestamps are the broker's append time
          (LogAppendTime). One reading per entity primes the group; once the group is
          stable with k members and has scored it, the same load generator sends
          records at one fixed rate for every k (default 0.5 x the k=1 drain rate),
          ``--warmup`` s left out, then ``--seconds`` s measured. Each input record
          carries a ``sent_us`` header (wall clock at ``send()``). Latency per window =
          append time of its scores record - ``sent_us`` of the input record that
          completed it (found by partition and offset): produce -> score published.
          It holds the producer's linger and request, the broker, the fetch, waiting
          for the batch before, scoring, and the daemon's own produce of the scores
          record (linger 5 ms, then its flush): an upper bound of produce -> scored,
          above bench_e2e.py's (e) by those last steps and by the cost of publishing one
          scores record per window. All processes share one clock. The CPU shares
          during the paced run are shown too.

Everything runs on this machine's cores: the broker JVM and the load generator share
them with the daemons. Each daemon scores on one thread; on 2 cores two daemons can use
at most the two cores less what the broker takes, so the ratio tops out below 2, and a
third daemon only shares the cores (the table shows where they went).

Prints a table, then one JSON line (last): processes, records_per_s, ratio_to_one,
balance_bound, p50_latency_ms, p99_latency_ms, latency_rate_per_s,
daemon_cpu_ms_per_1k_records (all daemons' CPU over the drain per 1,000 records),
rss_mb_per_daemon (peak VmHWM of the largest daemon), cpu_share ({k: {daemons, broker,
producer, bench, other, idle}} during the drain), cpu_share_paced, records, entities,
partitions, cores.

    .venv/bin/python scripts/bench_scaleout.py [--records 100000] [--seconds 15] [--bootstrap HOST:PORT] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import orjson  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402

import bench_e2e as e2e  # noqa: E402  (its data, model, topics and load generator: one definition of each)
from streamvae.testing.benchtools import CpuWatch, listening_pid  # noqa: E402
from streamvae.testing.broker import use_broker  # noqa: E402
from streamvae.testing.procs import DaemonProc, memory_mb, run_cmd  # noqa: E402
from streamvae.testing.topics import Cluster, Topics  # noqa: E402

READY_S = 180.0  # k daemons importing TensorFlow at once on 2 cores
DRAIN_LIMIT_S = 900.0
FAST = 1e9  # the load generator's rate for a burst: every record due at once


# ----------------------------------------------------------------------------------------
# a group of daemons
# ----------------------------------------------------------------------------------------


@dataclass
class Group:
    """k daemons of one group on ``topics`` (fresh group id, one config, ``env`` added)."""

    k: int
    topics: Topics
    model: Path
    work: Path
    tag: str
    max_poll: int
    env: dict[str, str] = field(default_factory=dict)
    daemons: list[DaemonProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = f"bench-{self.tag}-{uuid.uuid4().hex[:8]}"
        self.config = e2e.bench_config(self.topics, self.work / f"{self.tag}.toml", self.model, self.id, self.max_poll)

    def start(self) -> None:
        """Start all k at once; return when all are ready and the group is stable with k members."""
        for i in range(self.k):
            self.daemons.append(DaemonProc(run_cmd(self.config), self.work / f"daemon-{self.tag}-{i}.log",
                                           env=self.env, cwd=ROOT))
        for d in self.daemons:
            d.wait_ready(READY_S)
        with Cluster(self.topics.bootstrap) as c:
            wait_stable(c, self.id, self.k, 120.0, self.check_alive)

    def pids(self) -> dict[str, int | None]:
        return {f"daemon{i + 1}": d.proc.pid for i, d in enumerate(self.daemons)}

    def check_alive(self) -> None:
        for d in self.daemons:
            d.check_alive()

    def stop(self) -> None:
        """SIGTERM to all at once, then wait for each; RuntimeError if one failed."""
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.terminate()
        for d in self.daemons:  # one SIGTERM each: DaemonProc.stop would send another to one still running
            try:
                d.proc.wait(60.0)
            except subprocess.TimeoutExpired:
                pass
        codes = [(d, d.stop(30.0)) for d in self.daemons]
        bad = [(d, rc) for d, rc in codes if rc != 0]
        if bad:
            d, rc = bad[0]
            raise RuntimeError(f"daemon exited with {rc}\n{d.log_tail()}")

    def close(self) -> None:
        """Kill whatever still runs (after a failure)."""
        for d in self.daemons:
            d.close()


def wait_stable(k: Cluster, group: str, members: int, timeout: float, check: Callable[[], None]) -> None:
    """Until ``group`` is Stable with ``members`` members, each assigned partitions."""
    deadline = time.monotonic() + timeout
    g: dict[str, Any] = {}
    while time.monotonic() < deadline:
        check()
        try:
            g = k.admin.describe_groups([group]).get(group, {})
        except KafkaError as e:  # no coordinator yet on a fresh broker
            if not e.retriable:
                raise
        ms = g.get("members") or []
        if g.get("group_state") == "Stable" and len(ms) == members and all(_assigned(m) for m in ms):
            return
        time.sleep(0.05)
    raise RuntimeError(f"group {group} not stable with {members} members in {timeout:g} s: {g}")


def _assigned(member: dict[str, Any]) -> bool:
    a = member.get("member_assignment")
    parts = getattr(a, "assigned_partitions", None)
    if parts is None and isinstance(a, dict):
        parts = a.get("assigned_partitions")
    return bool(parts)


def scored_total(k: Cluster, group: str, topic: str, ends: dict[int, int]) -> int:
    """Records of ``topic`` the group's committed ``scored_to`` covers (0 while the
    coordinator is not found yet, a retriable error)."""
    try:
        done = k.scored_to(group, topic)
    except KafkaError as e:
        if not e.retriable:
            raise
        return 0
    return sum(min(done.get(p, 0), e) for p, e in ends.items())


# ----------------------------------------------------------------------------------------
# the records and the load generator
# ----------------------------------------------------------------------------------------


def write_messages(path: Path, msgs: Iterable[tuple[bytes, int, bytes]]) -> dict[int, int]:
    """The load generator's file (per message: partition, key, value; see
    PacedProducer.java); the records per partition."""
    counts: dict[int, int] = {}
    with open(path, "wb") as fh:
        for key, part, value in msgs:
            fh.write(struct.pack(">ii", part, len(key)) + key + struct.pack(">i", len(value)) + value)
            counts[part] = counts.get(part, 0) + 1
    return counts


def burst_messages(n_records: int, n_entities: int, partitions: int) -> list[tuple[bytes, int, bytes]]:
    """bench_e2e.py's records (``make_records``), each in the partition its key hashes to."""
    keys, values, _ = e2e.make_records(n_records, n_entities, seed=2026)
    part_of: dict[bytes, int] = {}
    for key in keys:
        if key not in part_of:
            part_of[key] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return [(k, part_of[k], v) for k, v in zip(keys, values)]


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The load generator's last JSON line (t_start_wall, sent, seconds, cpu_s) once it exits."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}:\n{err[-3000:]}")
    info: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return info


# ----------------------------------------------------------------------------------------
# the two phases
# ----------------------------------------------------------------------------------------


def drain(bootstrap: str, model: Path, k_procs: int, msg_file: Path, ends: dict[int, int], max_poll: int,
          work: Path, broker_pid: int | None, java: Sequence[str]) -> dict[str, Any]:
    """k daemons drain a burst of records; see the module doc, ``drain``, ``balance``, ``cores``."""
    n_records = sum(ends.values())
    topics = e2e.bench_topics(bootstrap, len(ends), f"scale{k_procs}")
    g = Group(k_procs, topics, model, work, f"drain{k_procs}", max_poll)
    c = Cluster(bootstrap)
    try:
        g.start()
        watch = CpuWatch({**g.pids(), "broker": broker_pid, "bench": os.getpid()})
        watch.start()
        prod = subprocess.Popen([*java, bootstrap, topics.input, str(FAST), str(msg_file)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + DRAIN_LIMIT_S
            while True:
                g.check_alive()
                if prod.poll() not in (None, 0):
                    finish(prod, 10.0)  # raises with its stderr
                total = scored_total(c, g.id, topics.input, ends)
                if total >= n_records:
                    t_end = time.time()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{k_procs} daemons scored {total} of {n_records} in {DRAIN_LIMIT_S:g} s")
                time.sleep(0.1)
            share = watch.stop()
            info = finish(prod, 60.0)
        finally:
            if prod.poll() is None:
                prod.kill()
                prod.wait(10)
        per_daemon = [d.totals() for d in g.daemons]
        rss = [memory_mb(d.proc.pid)["peak"] for d in g.daemons]
    except BaseException:
        g.close()
        raise
    finally:
        c.close()
    g.stop()
    span = t_end - info["t_start_wall"]
    by_daemon = [m.get("records_total", 0.0) for m in per_daemon]
    # the generator's own CPU from its clock (after its start-up), not counted in "other"
    share["producer"] = info["cpu_s"] / watch.seconds
    share["other"] = max(0.0, share["other"] - share["producer"])
    return {
        "per_s": n_records / span, "seconds": span, "burst_s": info["seconds"], "records_by_daemon": by_daemon,
        "bound": n_records / max(max(by_daemon), 1.0),
        "alerts": sum(m.get("alerts_total", 0.0) for m in per_daemon),
        "cpu_ms_per_1k": 1e6 * sum(share[n] for n in g.pids()) * watch.seconds / n_records,
        "rss_mb": max(rss), "share": share,
    }


def _prime(topic: str, bootstrap: str, n_entities: int) -> None:
    """One reading per entity at ts T0 (the paced run's readings start at T0 + 1)."""
    rng = np.random.default_rng(6)
    reading = e2e.series(n_entities, rng).round(4).tolist()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for e in range(n_entities):
            name = e2e.entity_name(e)
            prod.send(topic, key=name.encode(), value=orjson.dumps(
                {"entity": name, "ts": e2e.T0, "values": dict(zip(e2e.FEATURES, reading[e]))}))
        prod.flush(30)
    finally:
        prod.close(10)


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now (all partitions, from the start)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        ends = c.end_offsets(tps)
        c.assign(tps)
        c.seek_to_beginning()
        out: list[Any] = []
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 300
        while left and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500, max_records=10_000).items():
                out += recs
                if c.position(tp) >= ends[tp]:
                    left.discard(tp)
        if left:
            raise RuntimeError(f"could not read {topic} to its end in 300 s")
        return out
    finally:
        c.close()


def latencies(inputs: Iterable[Any], scores: Iterable[Any], cut_us: float) -> np.ndarray:
    """Per scored window, ms from its input record's ``sent_us`` to its scores record's
    append time; windows completed by records sent before ``cut_us`` are left out."""
    sent = {}
    for r in inputs:
        h = dict(r.headers or ())
        if "sent_us" in h:
            sent[(r.partition, r.offset)] = int(h["sent_us"])
    out = []
    for r in scores:
        v = orjson.loads(r.value)
        s = sent.get((v["partition"], v["offset"]))
        if s is not None and s >= cut_us:
            out.append(r.timestamp - s / 1e3)
    return np.asarray(out, dtype=np.float64)


def paced(bootstrap: str, model: Path, k_procs: int, rate: float, seconds: float, warmup: float, n_entities: int,
          partitions: int, max_poll: int, work: Path, broker_pid: int | None, java: Sequence[str]) -> dict[str, Any]:
    """k fresh daemons publishing their scores; records at ``rate``; see the module doc, ``latency``."""
    topics = e2e.bench_topics(bootstrap, partitions, f"scale{k_procs}lat")
    scores = topics.input.replace("sensors-", "scores-")
    with Cluster(bootstrap) as c:
        c.create({scores: 1}, {scores: {"message.timestamp.type": "LogAppendTime"}})
    msg_file = work / f"paced-{k_procs}.bin"
    write_messages(msg_file, e2e.paced_messages(list(range(partitions)), rate, seconds + warmup, n_entities))
    g = Group(k_procs, topics, model, work, f"lat{k_procs}", max_poll, env={"STREAMVAE_TOPICS__SCORES": scores})
    try:
        g.start()
        _prime(topics.input, bootstrap, n_entities)
        topics.wait_caught_up(120.0, g.daemons[0], g.id, poll=0.1)
        watch = CpuWatch({**g.pids(), "broker": broker_pid})
        watch.start()
        prod = subprocess.Popen([*java, bootstrap, topics.input, str(rate), str(msg_file)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        info = finish(prod, seconds + warmup + 120)
        share = watch.stop()
        topics.wait_caught_up(120.0, g.daemons[0], g.id, poll=0.1)
        g.check_alive()
    except BaseException:
        g.close()
        raise
    g.stop()
    share["producer"] = info["cpu_s"] / watch.seconds
    share["other"] = max(0.0, share["other"] - share["producer"])
    lat = latencies(read_all(bootstrap, topics.input), read_all(bootstrap, scores), (info["t_start_wall"] + warmup) * 1e6)
    if len(lat) == 0:
        raise RuntimeError("no scored window in the measured part of the paced run")
    return {"rate": rate, "achieved": info["sent"] / info["seconds"], "windows": len(lat),
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
            "share": share}


# ----------------------------------------------------------------------------------------


def _r(x: float, nd: int = 2) -> float | None:
    return None if x != x else round(x, nd)


@dataclass
class Run:
    """What one run measured: per group size its drain and its paced run."""

    sizes: list[int]
    max_poll: int
    given_model: bool
    given_broker: bool
    bootstrap: str = ""
    broker_pid: int | None = None
    train_s: float = 0.0
    seconds: float = 0.0
    ends: dict[int, int] = field(default_factory=dict)
    drains: dict[int, dict[str, Any]] = field(default_factory=dict)
    lats: dict[int, dict[str, Any]] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000, help="records each group size drains")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds of each paced latency run")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of each paced run produced but left out")
    ap.add_argument("--processes", default="1,2,3", help="group sizes, comma-separated (the first is the baseline)")
    ap.add_argument("--entities", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the input topic (default 6)")
    ap.add_argument("--max-poll-records", type=int, default=None, help="group.max_poll_records (default: the config's)")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="records/s of every paced run (default 0.5 x the first group size's drain rate)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting a LocalBroker")
    ap.add_argument("--model", default=None, help="use this trained model artifact instead of training one")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs when training the model (default 15)")
    return ap.parse_args()


def measure(args: argparse.Namespace, sizes: list[int]) -> Run:
    """Train (or take) the model, start (or take) the broker, and run every phase."""
    from streamvae.config import Config

    max_poll = args.max_poll_records or Config().group.max_poll_records
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    broker = None
    t_start = time.perf_counter()
    r = Run(sizes=sizes, max_poll=max_poll, given_model=bool(args.model), given_broker=bool(args.bootstrap))
    try:
        model, r.train_s = (Path(args.model), 0.0) if args.model else e2e.train_model(work, args.epochs)
        r.bootstrap, broker = use_broker(args.bootstrap)
        r.broker_pid = broker.pid if broker is not None else listening_pid(int(r.bootstrap.rsplit(":", 1)[1]))
        java = e2e.java_load_generator(work)
        msg_file = work / "burst.bin"
        counts = write_messages(msg_file, burst_messages(args.records, args.entities, args.partitions))
        r.ends = {p: counts.get(p, 0) for p in range(args.partitions)}
        for n in sizes:
            r.drains[n] = drain(r.bootstrap, model, n, msg_file, r.ends, max_poll, work, r.broker_pid, java)
            print(f"drain, {n} daemon(s): {r.drains[n]['per_s']:,.0f} records/s", file=sys.stderr, flush=True)
        rate = args.latency_rate or 0.5 * r.drains[sizes[0]]["per_s"]
        for n in ([] if args.skip_latency else sizes):
            r.lats[n] = paced(r.bootstrap, model, n, rate, args.seconds, args.warmup, args.entities, args.partitions,
                              max_poll, work, r.broker_pid, java)
            print(f"latency, {n} daemon(s): p99 {r.lats[n]['p99']:.1f} ms", file=sys.stderr, flush=True)
    except BaseException:
        print(f"bench_scaleout failed; daemon logs and configs kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        if broker is not None:
            broker.stop()
    r.seconds = time.perf_counter() - t_start
    return r


def daemon_shares(s: dict[str, float], n: int) -> list[float]:
    """Each daemon's share of a core, from a ``CpuWatch`` result."""
    return [s[f"daemon{i + 1}"] for i in range(n)]


def _shares(s: dict[str, float], n: int, keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"daemons": [_r(x) for x in daemon_shares(s, n)]}
    out.update({key: _r(s[key]) for key in keys})
    return out


def print_tables(args: argparse.Namespace, r: Run) -> None:
    sizes, drains, lats, ends, max_poll = r.sizes, r.drains, r.lats, r.ends, r.max_poll
    cores = os.cpu_count() or 1
    base = drains[sizes[0]]["per_s"]
    print(f"streamvae scale-out: {args.records:,} records, {args.entities} entities, {args.partitions} partitions "
          f"({' / '.join(f'{ends[p]:,}' for p in sorted(ends))} records), one group; F={len(e2e.FEATURES)} "
          f"W={e2e.WINDOW} stride 1 L=10; max_poll_records={max_poll}; {cores} cores")
    print(f"broker: {'given' if r.given_broker else 'LocalBroker'} {r.bootstrap} (pid {r.broker_pid}); "
          f"model {'given' if r.given_model else f'trained in {r.train_s:.0f}s'}; whole run {r.seconds:.0f}s\n")
    print(f"{'daemons':>7} {'records/s':>10} {'ratio':>6} {'bound':>6} {'seconds':>8} {'burst s':>8} "
          f"{'cpu ms/1k':>9} {'RSS MiB':>8}  records per daemon")
    for n in sizes:
        d = drains[n]
        print(f"{n:>7} {d['per_s']:>10,.0f} {d['per_s'] / base:>6.2f} {d['bound']:>6.2f} {d['seconds']:>8.2f} "
              f"{d['burst_s']:>8.2f} {d['cpu_ms_per_1k']:>9.0f} {d['rss_mb']:>8.0f}  "
              + ", ".join(f"{x:,.0f}" for x in d["records_by_daemon"]))
    print("records/s: records / (all scored_to at the end - first send); the group stable with all its daemons before "
          "the first send. bound: records / the busiest daemon's records (the partitions' split). burst s: the load "
          "generator's sending time. cpu ms/1k: all daemons' CPU per 1,000 records. RSS: the largest daemon's peak.\n")
    print(f"where the cores went during the drain (share of one core; {cores} cores in all)")
    print(f"{'daemons':>7}  {'each daemon':<20} {'daemons':>8} {'broker':>7} {'producer':>9} {'bench':>6} {'other':>6} "
          f"{'idle':>6}")
    for n in sizes:
        s, each = drains[n]["share"], daemon_shares(drains[n]["share"], n)
        print(f"{n:>7}  {', '.join(f'{x:.2f}' for x in each):<20} {sum(each):>8.2f} {s['broker']:>7.2f} "
              f"{s['producer']:>9.2f} {s['bench']:>6.2f} {s['other']:>6.2f} {s['idle']:>6.2f}")
    print("producer: the load generator's burst; bench: this process polling the group's offsets; other: the rest of "
          "the machine (other jobs).")
    if lats:
        print(f"\nlatency, produce -> score published (scores record append time - sent_us), "
              f"{lats[sizes[0]]['rate']:,.0f} records/s for every size, {args.seconds:.0f}s after {args.warmup:.0f}s warm-up")
        print(f"{'daemons':>7} {'achieved/s':>10} {'windows':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  "
              f"CPU share: daemons, broker, load generator, other, idle")
        for n in sizes:
            x, s = lats[n], lats[n]["share"]
            print(f"{n:>7} {x['achieved']:>10,.0f} {x['windows']:>8,} {x['p50']:>7.1f} {x['p99']:>7.1f} {x['max']:>7.1f}  "
                  f"{sum(daemon_shares(s, n)):.2f}, {s['broker']:.2f}, {s['producer']:.2f}, {s['other']:.2f}, "
                  f"{s['idle']:.2f}")
    busiest = max(max(d["share"]["other"] for d in drains.values()),
                  max((x["share"]["other"] for x in lats.values()), default=0.0))
    if busiest > 0.25:
        print(f"\nnote: other processes used up to {busiest:.2f} of the {cores} cores during a phase: a contended machine "
              "gives more processes a larger share of it, so rates, ratios and latencies here are not the group's "
              "capacity; the daemons' CPU per record is. Run again when the machine is quiet.")
    if cores <= 2:
        print(f"\nnote: {cores} cores: each daemon scores on one thread, and the broker (and any other job) takes its "
              "share of the same cores, so 2 daemons top out near 2x and below it; a third only shares the cores.")


def summary(args: argparse.Namespace, r: Run) -> dict[str, Any]:
    """The last line's figures."""
    sizes, drains, lats = r.sizes, r.drains, r.lats
    base = drains[sizes[0]]["per_s"]

    return {
        "processes": sizes,
        "records_per_s": [round(drains[n]["per_s"]) for n in sizes],
        "ratio_to_one": [round(drains[n]["per_s"] / base, 3) for n in sizes],
        "balance_bound": [round(drains[n]["bound"], 2) for n in sizes],
        "p50_latency_ms": [round(lats[n]["p50"], 1) for n in sizes] if lats else None,
        "p99_latency_ms": [round(lats[n]["p99"], 1) for n in sizes] if lats else None,
        "latency_rate_per_s": round(lats[sizes[0]]["rate"]) if lats else None,
        "daemon_cpu_ms_per_1k_records": [round(drains[n]["cpu_ms_per_1k"]) for n in sizes],
        "rss_mb_per_daemon": [round(drains[n]["rss_mb"]) for n in sizes],
        "cpu_share": {str(n): _shares(drains[n]["share"], n, ("broker", "producer", "bench", "other", "idle"))
                      for n in sizes},
        "cpu_share_paced": {str(n): _shares(lats[n]["share"], n, ("broker", "producer", "other", "idle"))
                            for n in sizes} if lats else None,
        "records": args.records,
        "entities": args.entities,
        "partitions": args.partitions,
        "cores": os.cpu_count() or 1,
    }


def main() -> None:
    args = parse_args()
    sizes = [int(x) for x in args.processes.split(",")]
    if not sizes or min(sizes) < 1 or max(sizes) > args.partitions:
        sys.exit(f"--processes must be group sizes in [1, {args.partitions}] (one daemon per partition at most); "
                 f"got {args.processes}")
    r = measure(args, sizes)
    print_tables(args, r)
    print(json.dumps(summary(args, r)))


if __name__ == "__main__":
    main()
