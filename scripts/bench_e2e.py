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
                        the end offsets (group offsets polled every 0.05 s, as /healthz is);
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
                        at a fixed rate, 0.5 x and 0.9 x e2e_per_s, for --latency-seconds
                        each (after --latency-warmup s, left out) by a load generator in
                        its own process (--load-generator): by default the Java Kafka
                        client (scripts/loadgen/PacedProducer.java, compiled here against
                        the broker's jars), else kafka-python's producer built by
                        ``make_producer``; both acks=all, linger 5 ms, one request in
                        flight. One reading in about 2 x rate is a spike, so alerts flow.
                        p50/p99 of produce -> score and produce -> alert on its topic;
                        and where one poll's time goes on the daemon's main thread
                        (wall and CPU of the poll, of the batch's processing and of the
                        rest of the batch; the model calls' wall; CPU per record);
(f) CPU                 the daemon's CPU per 1,000 records and share of one core at 200
                        and 2,000 records/s (the same paced feed, no spikes, under the
                        same shim as (e), which adds a few microseconds a poll, so that
                        the latency these rates get is shown too: the fetch settings
                        that save CPU at a slow feed make its records wait in the
                        broker), and at full speed (the drain of (c)).

(a) and (c) include the consumer's start and group join, as the brief defines them; the
table also shows both rates counted from the first batch ("steady"). (b) and (d) run in
this process after ``settle_runtime()`` (gc.freeze, the young generation's threshold, a
1 ms GIL switch interval), as ``Daemon.run`` does before its loop.

How (e) is measured: see streamvae/testing/paced.py. In short, the UNMODIFIED daemon runs
under a shim (scripts/latencyshim.py) that notes, per poll, when ``poll``
returned, when ``StreamPipeline.process`` returned (the windows scored: score, threshold
and episodes done) and when ``Daemon.handle`` returned (alerts acknowledged, offsets
handed to the commit), and per record its ``sent_us`` header (wall clock at ``send()``)
and the broker's append time (the topic is LogAppendTime). Alerts: the record that
completed each alert's window, and the alert's append time on the (LogAppendTime) alerts
topic. All processes share one clock.

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
p99_latency_ms (produce -> score at 0.5 x), p50/p99_latency_ms_09 (at 0.9 x),
p50/p99_alert_latency_ms, cpu_share_at_200_per_s, cpu_ms_per_1000 (at 200/s, 2,000/s and
full speed), latency_cycle (the main thread's poll at 0.5 x, as above), latency_late_share
(the share of records at 0.5 x that came a batch late, as above), records,
entities, and more (with ``--delivery both``:
e2e_exactly_once_per_s and ratio_exactly_once_at_least_once; null otherwise).

    .venv/bin/python scripts/bench_e2e.py [--records 200000] [--bootstrap HOST:PORT] [--model DIR] [--delivery both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

from streamvae.config import Config, load_config  # noqa: E402
from streamvae.kafka.clients import make_consumer  # noqa: E402
from streamvae.testing.benchdata import bench_config, bench_topics, make_records, produce_bulk, train_model  # noqa: E402
from streamvae.testing.benchtools import OtherLoad  # noqa: E402
from streamvae.testing.broker import kafka_jars, use_broker  # noqa: E402
from streamvae.testing.procs import DaemonProc, cpu_seconds, run_cmd  # noqa: E402
from streamvae.testing.loadgen import java_load_generator  # noqa: E402
from streamvae.testing.paced import FEATURES, WINDOW, measure_paced  # noqa: E402
from streamvae.testing.pacedtable import cpu_lines, fig, latency_lines  # noqa: E402
from streamvae.testing.topics import Cluster, Topics  # noqa: E402

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
        self.det, self.names, self.version_ = det, det.names, det.version_
        self.parts: list[Any] = []

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
        cpu_ready = cpu_seconds(d.proc.pid)
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
                t_end, cpu_end = now, cpu_seconds(d.proc.pid)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon scored {total} of {n_records} in 600 s\n{d.log_tail()}")
            time.sleep(0.05)  # as wait_ready polls /healthz: the end is seen ~25 ms late on average, not ~100
        m = d.totals()
    finally:
        k.close()
        rc = d.stop()
    if rc != 0:
        raise RuntimeError(f"daemon exited with {rc}\n{d.log_tail()}")
    assert t_first is not None
    return {
        "per_s": n_records / (t_end - t_ready), "seconds": t_end - t_ready,
        "cpu_ms_per_1000": 1e6 * (cpu_end - cpu_ready) / n_records,  # start-up and group join included
        "steady_per_s": (n_records - n_first) / (t_end - t_first) if t_end > t_first else float("nan"),
        "records_total": m.get("records_total", 0), "windows": m.get("windows_scored_total", 0),
        "batches": m.get("batches_total", 0), "alerts": m.get("alerts_total", 0),
        "dead_letters": m.get("dead_letters_total", 0),
    }


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
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="records/s of (e)'s first run (default 0.5 x e2e_per_s; the second runs at 1.8 x this)")
    ap.add_argument("--load-generator", choices=("java", "python"), default="java",
                    help="who sends (e)'s records: the Java Kafka client (default; the plant's producers run "
                         "elsewhere, and this one takes little of the 2 cores) or kafka-python's producer")
    ap.add_argument("--cpu-seconds", type=float, default=30.0, help="measured seconds of each (f) run, after the warm-up")
    ap.add_argument("--skip-latency", action="store_true", help="skip (e) and (f)")
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

        paced: dict[str, dict[str, Any]] = {}
        if not args.skip_latency:
            java = java_load_generator(work, kafka_jars()) if args.load_generator == "java" else None
            half = args.latency_rate or 0.5 * e2e["per_s"]
            # (e) at 0.5 x and 0.9 x capacity with a spike every ~2 s; (f) at 200/s and
            # 2,000/s, no spikes; all under the shim
            for name, rate, spiky in (("e_05", half, True), ("e_09", 1.8 * half, True),
                                      ("f_200", 200.0, False), ("f_2000", 2000.0, False)):
                lt = bench_topics(bootstrap, args.partitions, "lat", append_time=True)
                lgroup = f"bench-lat-{uuid.uuid4().hex[:8]}"
                lcfg = bench_config(lt, work / f"{name}.toml", model, lgroup, bs)
                # every entity's windows full before the measured seconds start
                warm = max(args.latency_warmup, 1.5 * WINDOW * args.entities / rate)
                spikes = int(2 * rate) // 10 * 10 + 7 if spiky else 0  # ends in 7: every entity gets some
                other.start()
                paced[name] = measure_paced(lcfg, lt, lgroup, rate, args.latency_seconds if spiky else args.cpu_seconds,
                                            warm, args.entities, work, work / f"daemon-{name}.log", latency=True,
                                            spike_every=spikes, broker_pid=broker.pid if broker is not None else None,
                                            java=java)
                other.stop(name)
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
    print(f"{'offline / model only':<40} {r_om:>7.3f}  >= 0.85  {'MET' if r_om >= 0.85 else 'MISSED'}")
    print(f"{'e2e / offline':<40} {r_eo:>7.3f}  >= 0.85  {'MET' if r_eo >= 0.85 else 'MISSED'}")
    print(f"{'e2e / raw consume':<40} {e2e['per_s'] / raw['per_s']:>7.3f}")
    e05, e09 = paced.get("e_05"), paced.get("e_09")
    for name, key, run in (("0.5 x", "e_05", e05), ("0.9 x", "e_09", e09)):
        if run is not None:
            print()
            print("\n".join(latency_lines(run, name, bool(args.latency_rate), ol.get(key, float("nan")),
                                         args.latency_seconds, target=run is e05)))
    cpu200, cpu2000 = paced.get("f_200"), paced.get("f_2000")
    if cpu200 is not None and cpu2000 is not None:
        print()
        print("\n".join(cpu_lines(cpu200, cpu2000, e2e["per_s"], e2e["cpu_ms_per_1000"])))
    for n in notes:
        print(f"note: {n}")
    print(json.dumps({
        "raw_consume_per_s": round(raw["per_s"]),
        "model_only_per_s": round(mo["per_s"]),
        "offline_per_s": round(off["per_s"]),
        "e2e_per_s": round(e2e["per_s"]),
        "ratio_offline_model": round(r_om, 3),
        "ratio_e2e_offline": round(r_eo, 3),
        "p50_latency_ms": fig(e05, "score", "p50"),
        "p99_latency_ms": fig(e05, "score", "p99"),
        "p50_commit_latency_ms": fig(e05, "done", "p50"),
        "p99_commit_latency_ms": fig(e05, "done", "p99"),
        "p50_alert_latency_ms": fig(e05, "alert", "p50"),
        "p99_alert_latency_ms": fig(e05, "alert", "p99"),
        "p50_latency_ms_09": fig(e09, "score", "p50"),
        "p99_latency_ms_09": fig(e09, "score", "p99"),
        "p99_alert_latency_ms_09": fig(e09, "alert", "p99"),
        "latency_rate_per_s": None if e05 is None else round(e05["rate"]),
        "latency_cycle": None if e05 is None else e05.get("cycle"),
        "latency_late_share": None if e05 is None or e05.get("late") is None else round(e05["late"], 4),
        "latency_cpu_share": None if e05 is None else {k: (round(v, 2) if v == v else None) for k, v in e05["cpu"].items()},
        "cpu_share_at_200_per_s": None if cpu200 is None else round(cpu200["cpu"]["daemon"], 4),
        "latency_ms_at_200_per_s": None if cpu200 is None else {q: fig(cpu200, "score", q) for q in ("p50", "p99")},
        "latency_ms_at_2000_per_s": None if cpu2000 is None else {q: fig(cpu2000, "score", q) for q in ("p50", "p99")},
        "cpu_ms_per_1000": {"200": None if cpu200 is None else round(cpu200["cpu_ms_per_1000"]),
                            "2000": None if cpu2000 is None else round(cpu2000["cpu_ms_per_1000"]),
                            "full": round(e2e["cpu_ms_per_1000"])},
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
