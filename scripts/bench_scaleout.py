#!/usr/bin/env python
"""Scale-out: 1, 2 and 3 daemons of one consumer group on a 6-partition topic.

Throughput, latency and where the cores go, for k ``streamvae run`` processes, each
against one process in the same run.

One run, one broker, one model (trained here as scripts/bench_e2e.py trains it, or
``--model``), the same records for every group size: ``--records`` (default 100,000)
from 100 entities (F=8, W=32, stride 1, L=10; bench_e2e.py's correlated sinusoids, one
reading a second per entity), each entity's records in the partition its key hashes to
(kafka-python's partitioner), so the partitions hold unequal shares. For k in 1, 2, 3, k
daemons of a fresh group on a fresh, empty 6-partition topic, started at once, each
through scripts/latencyshim.py (the unmodified daemon, with ``StreamPipeline.process`` and
``Daemon.handle`` noting the wall clock; see its docstring, (e)); once all are ready and
the group is stable with k members, each holding partitions (DescribeGroups, polled
every 50 ms):

drain     the Java Kafka client (scripts/loadgen/PacedProducer.java, which bench_e2e.py
          compiles; acks=all, linger 5 ms) sends all the records as fast as it can (a
          burst of a second or two) and the daemons drain them. records_per_s = records
          / (the moment every partition's committed ``scored_to`` metadata reaches its
          end offset (polled every 0.1 s, as bench_e2e.py (c) waits) - the first send);
          ratio_to_one = records_per_s(k) / records_per_s(first size).
          Why not a topic filled before the daemons start: they get ready one by one
          (each imports TensorFlow and loads the model, on the same cores), the first
          starts consuming at once, and a later join moves partitions only at the
          members' next heartbeat (up to 3 s). With a pre-filled topic of 40,000 records
          the group of 3 was stable 3.4 s after the last daemon got ready, by when the
          first ones had scored 28,000 records: the rest measured an uneven tail.
balance   each daemon's records (its /metrics ``records_total``) and the bound the
          partitions set: records / the busiest daemon's records, the ratio the group
          would reach if every daemon ran at the one-process rate.
cores     from the burst's launch to the end: CPU seconds of each daemon process, of the
          broker JVM (its pid from the LocalBroker, or the process listening on
          ``--bootstrap``'s port), of the load generator (its own count after its
          start-up), of this process (it polls the group's offsets) and of the whole
          machine (/proc/stat), each over that wall time: the share of a core each used
          (streamvae/testing/benchtools.py). other = what the rest of the machine used
          (other jobs); idle = cores left unused.
latency   then the same daemons: the load generator sends the next readings of every
          entity at one fixed rate for every k (default 0.5 x the k=1 drain rate),
          ``--warmup`` s left out, ``--seconds`` s measured, each record with a
          ``sent_us`` header (wall clock at ``send()``). Per record, produce -> score =
          the moment ``process`` returned for its batch - ``sent_us``: bench_e2e.py's
          (e) figure, for each group size. All processes share one clock. The CPU
          shares during this phase are shown too.

Everything runs on this machine's cores: the broker JVM and the load generator share
them with the daemons. Each daemon scores on one thread; on 2 cores two daemons can use
at most the two cores less what the broker takes, so the ratio tops out below 2, and a
third daemon only shares the cores (the table shows where they went).

Prints a table, then one JSON line (last): processes, records_per_s, ratio_to_one,
balance_bound, p50_latency_ms, p99_latency_ms, latency_rate_per_s,
daemon_cpu_ms_per_1k_records (all daemons' CPU over the drain per 1,000 records),
rss_mb_per_daemon (peak VmHWM of the largest daemon; the shim's stamps add about 0.1 KB
a record), cpu_share and cpu_share_paced ({part: [one value per group size]}, part:
daemons (summed), each_daemon, broker, producer, bench, other, idle), records, entities,
partitions, cores.

    .venv/bin/python scripts/bench_scaleout.py [--records 100000] [--seconds 15] [--bootstrap HOST:PORT] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvae.testing.benchdata import Feed, bench_topics, train_model  # noqa: E402
from streamvae.testing.benchtools import CpuWatch, listening_pid  # noqa: E402
from streamvae.testing.broker import kafka_jars, use_broker  # noqa: E402
from streamvae.testing.group import Group, latencies, scored_total  # noqa: E402
from streamvae.testing.loadgen import finish, java_load_generator, send, with_producer, write_messages  # noqa: E402
from streamvae.testing.paced import FEATURES, WINDOW  # noqa: E402
from streamvae.testing.procs import memory_mb  # noqa: E402
from streamvae.testing.topics import Cluster  # noqa: E402

DRAIN_LIMIT_S = 900.0
FAST = 1e9  # the load generator's rate for a burst: every record due at once


# ----------------------------------------------------------------------------------------
# one group size
# ----------------------------------------------------------------------------------------


@dataclass
class Phases:
    """What ``measure_group`` needs besides the group size."""

    bootstrap: str
    model: Path
    work: Path
    max_poll: int
    broker_pid: int | None
    java: list[str]
    burst: Path
    ends: dict[int, int]
    feed: Feed
    burst_steps: int
    seconds: float
    warmup: float
    rate: float = 0.0  # records/s of the paced runs; 0: half the first group size's drain rate
    skip_latency: bool = False
    paced: Path | None = None  # their messages, written once the rate is known


def measure_group(k_procs: int, ph: Phases) -> dict[str, Any]:
    """k daemons: the burst drained, then (``ph.paced``) records at ``ph.rate``; see the module doc."""
    n_records = sum(ph.ends.values())
    topics = bench_topics(ph.bootstrap, len(ph.ends), f"scale{k_procs}")
    g = Group(k_procs, topics, ph.model, ph.work, ph.max_poll)
    c = Cluster(ph.bootstrap)
    lat: dict[str, Any] | None = None
    try:
        g.start()
        # drain
        watch = CpuWatch({**g.pids(), "broker": ph.broker_pid, "bench": os.getpid()})
        watch.start()
        prod = send(ph.java, ph.bootstrap, topics.input, FAST, ph.burst)
        try:
            deadline = time.monotonic() + DRAIN_LIMIT_S
            while True:
                g.check_alive()
                if prod.poll() not in (None, 0):
                    finish(prod, 10.0)  # raises with its stderr
                total = scored_total(c, g.id, topics.input, ph.ends)
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
        share = with_producer(share, info, watch.seconds)
        per_s = n_records / (t_end - info["t_start_wall"])
        by_daemon = [d.totals().get("records_total", 0.0) for d in g.daemons]
        rss = max(memory_mb(d.proc.pid)["peak"] for d in g.daemons)
        # latency, on the same daemons
        if not ph.skip_latency:
            if ph.paced is None:
                ph.rate = ph.rate or 0.5 * per_s
                ph.paced = ph.work / "paced.bin"
                want = int(ph.rate * (ph.seconds + ph.warmup))
                msgs = ph.feed.messages(ph.burst_steps, ph.feed.steps, limit=want)
                if len(msgs) < want:
                    raise RuntimeError(f"the feed holds {len(msgs):,} readings after the burst, {want:,} wanted: "
                                       "lower --latency-rate or --seconds")
                write_messages(ph.paced, msgs)
            lwatch = CpuWatch({**g.pids(), "broker": ph.broker_pid})
            lwatch.start()
            pinfo = finish(send(ph.java, ph.bootstrap, topics.input, ph.rate, ph.paced), 600.0)
            lshare = with_producer(lwatch.stop(), pinfo, lwatch.seconds)
            topics.wait_caught_up(120.0, g.daemons[0], g.id, poll=0.1)
            g.check_alive()
            lat = {"achieved": pinfo["sent"] / pinfo["seconds"], "cut_us": (pinfo["t_start_wall"] + ph.warmup) * 1e6,
                   "share": lshare}
    except BaseException:
        g.close()
        raise
    finally:
        c.close()
    g.stop()  # the shims write their stamps as the daemons exit
    out: dict[str, Any] = {
        "per_s": per_s, "seconds": t_end - info["t_start_wall"],
        "burst_s": info["seconds"], "records_by_daemon": by_daemon, "bound": n_records / max(max(by_daemon), 1.0),
        "cpu_ms_per_1k": 1e6 * sum(share[n] for n in g.pids()) * watch.seconds / n_records, "rss_mb": rss,
        "share": share,
    }
    if lat is not None:
        ms = latencies(g.stamps, lat["cut_us"])
        if len(ms) == 0:
            raise RuntimeError("no record scored in the measured part of the paced run")
        out["latency"] = {"rate": ph.rate, "achieved": lat["achieved"], "records": len(ms),
                          "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                          "max": float(ms.max()), "share": lat["share"]}
    return out


# ----------------------------------------------------------------------------------------


def _r(x: float, nd: int = 2) -> float | None:
    return None if x != x else round(x, nd)


@dataclass
class Run:
    """What one run measured: per group size, ``measure_group``'s result."""

    sizes: list[int]
    max_poll: int
    given_model: bool
    given_broker: bool
    bootstrap: str = ""
    broker_pid: int | None = None
    train_s: float = 0.0
    seconds: float = 0.0
    ends: dict[int, int] = field(default_factory=dict)
    groups: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def lats(self) -> dict[int, dict[str, Any]]:
        return {n: g["latency"] for n, g in self.groups.items() if "latency" in g}


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
    """Train (or take) the model, start (or take) the broker, and measure every group size."""
    from streamvae.config import Config

    max_poll = args.max_poll_records or Config().group.max_poll_records
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    broker = None
    t_start = time.perf_counter()
    r = Run(sizes=sizes, max_poll=max_poll, given_model=bool(args.model), given_broker=bool(args.bootstrap))
    try:
        model, r.train_s = (Path(args.model), 0.0) if args.model else train_model(work, args.epochs)
        r.bootstrap, broker = use_broker(args.bootstrap)
        r.broker_pid = broker.pid if broker is not None else listening_pid(int(r.bootstrap.rsplit(":", 1)[1]))
        burst_steps = -(-args.records // args.entities)
        # room after the burst for paced runs of up to 100,000 records/s (or the rate asked for)
        paced_steps = int(max(args.latency_rate or 0.0, 100_000) * (args.seconds + args.warmup) / args.entities) + 2
        feed = Feed(args.entities, burst_steps + paced_steps, args.partitions)
        burst = work / "burst.bin"
        counts = write_messages(burst, feed.messages(0, burst_steps, limit=args.records))
        r.ends = {p: counts.get(p, 0) for p in range(args.partitions)}
        ph = Phases(r.bootstrap, model, work, max_poll, r.broker_pid, java_load_generator(work, kafka_jars()), burst, r.ends,
                    feed, burst_steps, args.seconds, args.warmup, args.latency_rate or 0.0, args.skip_latency)
        for n in sizes:
            r.groups[n] = g = measure_group(n, ph)
            lat = f"; p50 {g['latency']['p50']:.1f} ms, p99 {g['latency']['p99']:.1f} ms" if "latency" in g else ""
            print(f"{n} daemon(s): {g['per_s']:,.0f} records/s{lat}", file=sys.stderr, flush=True)
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


def shares_by_part(shares: list[tuple[int, dict[str, float]]], parts: tuple[str, ...]) -> dict[str, list[Any]]:
    """``{part: [one value per group size]}``: daemons (summed), each_daemon, then ``parts``."""
    out: dict[str, list[Any]] = {"daemons": [_r(sum(daemon_shares(s, n))) for n, s in shares],
                                 "each_daemon": [[_r(x) for x in daemon_shares(s, n)] for n, s in shares]}
    out.update({p: [_r(s[p]) for _, s in shares] for p in parts})
    return out


def print_tables(args: argparse.Namespace, r: Run) -> None:
    sizes, drains, lats, ends, max_poll = r.sizes, r.groups, r.lats, r.ends, r.max_poll
    cores = os.cpu_count() or 1
    base = drains[sizes[0]]["per_s"]
    print(f"streamvae scale-out: {args.records:,} records, {args.entities} entities, {args.partitions} partitions "
          f"({' / '.join(f'{ends[p]:,}' for p in sorted(ends))} records), one group; F={len(FEATURES)} "
          f"W={WINDOW} stride 1 L=10; max_poll_records={max_poll}; {cores} cores")
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
        print(f"\nlatency, produce -> score (process returned - sent_us), the same daemons, "
              f"{lats[sizes[0]]['rate']:,.0f} records/s for every size, {args.seconds:.0f}s after {args.warmup:.0f}s warm-up")
        print(f"{'daemons':>7} {'achieved/s':>10} {'records':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  "
              f"CPU share: daemons, broker, load generator, other, idle")
        for n in sizes:
            x, s = lats[n], lats[n]["share"]
            print(f"{n:>7} {x['achieved']:>10,.0f} {x['records']:>8,} {x['p50']:>7.1f} {x['p99']:>7.1f} {x['max']:>7.1f}  "
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
    sizes, drains, lats = r.sizes, r.groups, r.lats
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
        "cpu_share": shares_by_part([(n, drains[n]["share"]) for n in sizes],
                                    ("broker", "producer", "bench", "other", "idle")),
        "cpu_share_paced": shares_by_part([(n, lats[n]["share"]) for n in sizes],
                                          ("broker", "producer", "other", "idle")) if lats else None,
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
