"""Soak (issue 16, item 7): the daemon at a steady rate over 10,000 entities for many minutes.

A thread sends one reading per entity per step, round robin, at ``rate`` records/s (the
plant of streamvae/testing/proof/plant.py: four correlated sinusoids with noise, ``ts``
one second apart per entity, so every entity's windows form in event time however
slowly wall time brings them). The daemon (``streamvae run``, the plant's settings) scores them; every ``every`` seconds
this process reads the daemon's resident memory (VmRSS) and the group's lag. At the end
the feed stops, the daemon catches up and is stopped, and the log is searched for errors.

The rules, as pure functions tested without a broker (tests/unit/testing/test_soak_rules.py):

- warm-up (:func:`warmup_s`): until every entity has had a full window and a minute more,
  and at least 20% of the run, at most 5 minutes (when the run allows both);
- memory (:func:`rss_growth`): median RSS of the last minute against that of the first
  minute after warm-up; the target is growth under 5%;
- lag (:func:`lag_bounded`): records between the end offsets and the committed
  ``scored_to``; bounded when the last third's maximum exceeds the first third's by at
  most ``rate`` x 10 s;
- errors (:func:`error_lines`): log lines at level ERROR or CRITICAL.

    .venv/bin/python -m streamvae.testing.proof.soak --minutes 30 [--rate 2000] [--entities 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from streamvae.config import KafkaConfig
from streamvae.kafka.clients import KafkaError
from streamvae.kafka.produce import make_producer
from streamvae.testing.broker import use_broker
from streamvae.testing.procs import DaemonProc, memory_mb, run_cmd, write_config
from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.plant import FEATURES, T0, WINDOW, daemon_sections, signal, train_model
from streamvae.testing.topics import Cluster, Topics

# records/s. The 30-minute soak at this rate: the daemon used 0.55 of a core and its lag
# peaked at 3,352 records (1.7 s of feed), on 2 cores shared with the broker, the feed
# (0.26 of a core) and other work (load average 13).
DEFAULT_RATE = 2000.0
ENTITIES = 10_000
LAG_ALLOWANCE_S = 10.0  # lag rule: the last third may peak at most rate x this above the first third
MAX_WARMUP_S = 300.0
WARMUP_SHARE = 0.2

_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (ERROR|CRITICAL) ")  # service/logs.py's format


# -- the rules -----------------------------------------------------------------------------
def warmup_s(run_s: float, fill_s: float) -> float:
    """Seconds of the run before memory is judged.

    ``fill_s``: until every entity has had its first full window (W readings each). A
    minute more lets each one be scored, its threshold history allocated (a ring of
    ``threshold.min_history`` floats, in full at the first score) and the allocator
    settle; beyond that 20% of the run, capped at 5 minutes, so that a long run judges
    most of its length. Never so long that less than two minutes are left to judge
    (then the first and the last minute would overlap).

    >>> warmup_s(1800, 80), warmup_s(300, 80), warmup_s(150, 80)
    (300.0, 140.0, 30.0)
    """
    want = max(fill_s + 60.0, min(WARMUP_SHARE * run_s, MAX_WARMUP_S))
    return float(max(0.0, min(want, run_s - 120.0)))


def _median_in(samples: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    vals = [v for t, v in samples if lo <= t <= hi]
    return statistics.median(vals) if vals else math.nan


def rss_growth(samples: Sequence[tuple[float, float]], start: float, end: float,
               span: float = 60.0) -> tuple[float, float, float]:
    """``(first, last, growth)``: the median of the ``(t, rss)`` samples in the first
    ``span`` seconds from ``start``, in the last ``span`` seconds up to ``end``, and
    ``(last - first) / first``; NaN where a span has no sample.

    >>> rss_growth([(0, 100.0), (30, 100.0), (60, 110.0), (90, 103.0), (120, 103.0)], 0, 120, span=40)
    (100.0, 103.0, 0.03)
    """
    first = _median_in(samples, start, start + span)
    last = _median_in(samples, end - span, end)
    return first, last, round((last - first) / first, 6) if first > 0 else math.nan


def lag_bounded(samples: Sequence[tuple[float, float]], start: float, end: float,
                allowance: float) -> tuple[bool, float, float]:
    """``(bounded, first, last)``: the largest lag sampled in the first third of
    ``[start, end]`` and in the last third; bounded when ``last <= first + allowance``.

    A daemon that keeps up shows a lag of a few polls whatever the hour; one that falls
    short of the rate by a share ``f`` peaks at the end of each third, and its two maxima
    differ by ``f x rate x`` two thirds of the judged time. With ``allowance = rate x
    10 s`` a 30-minute run (25 minutes judged: maxima 1,000 s apart) fails any deficit
    above 1% of the rate, and one stall of under 10 s (a collection, a checkpoint)
    passes. No sample in a third: not bounded.

    >>> lag_bounded([(0, 900), (5, 1200), (10, 1000), (15, 1500)], 0, 15, 500)
    (True, 1200, 1500)
    >>> lag_bounded([(0, 900), (5, 1200), (10, 1000), (15, 2500)], 0, 15, 500)
    (False, 1200, 2500)
    """
    third = (end - start) / 3
    first = [v for t, v in samples if start <= t <= start + third]
    last = [v for t, v in samples if end - third <= t <= end]
    if not first or not last:
        return False, max(first, default=math.nan), max(last, default=math.nan)
    return max(last) <= max(first) + allowance, max(first), max(last)


def error_lines(text: str) -> list[str]:
    """The log's lines at level ERROR or CRITICAL (streamvae/service/logs.py's format), and
    the first line of any traceback printed outside logging (an exception in a thread).

    >>> error_lines("2026-01-01 00:00:00,000 INFO x: ok\\n2026-01-01 00:00:01,000 ERROR x: boom\\n"
    ...             "Exception in thread Thread-1:\\n")
    ['2026-01-01 00:00:01,000 ERROR x: boom', 'Exception in thread Thread-1:']
    """
    return [ln for ln in text.splitlines() if _LEVEL.match(ln) or ln.startswith("Exception in thread")]


# -- the feed ------------------------------------------------------------------------------
def entity_name(e: int) -> str:
    return f"soak-{e:05d}"


def readings(step: int, phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(entities, 4) readings of one step: ``plant.series`` (the model's training data:
    four correlated sinusoids of a one-minute cycle, noise 0.1) at second ``step`` of every
    entity at once, each ``phase`` seconds into its cycle."""
    x = signal(step + phase)
    return np.round(x + 0.1 * rng.standard_normal(x.shape), 4)


def messages(features: Sequence[str], entities: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """The feed's (key, JSON value) pairs, endless: step 0 of every entity (event time
    ``plant.T0``), then step 1 (``T0 + 1``), ...; the JSON is written by hand: 2.9 us a record
    against 13.9 us with ``json.dumps`` (timeit, here), on 2 cores shared with the daemon
    and the broker."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 60, entities)
    names = [entity_name(e) for e in range(entities)]
    keys = [n.encode() for n in names]
    step = 0
    while True:
        ts = T0 + step
        for e, row in enumerate(readings(step, phase, rng).tolist()):
            vals = ",".join(f'"{f}":{v!r}' for f, v in zip(features, row))
            yield keys[e], f'{{"entity":"{names[e]}","ts":{ts},"values":{{{vals}}}}}'.encode()
        step += 1


class SteadyFeed(threading.Thread):
    """Sends ``rate`` readings/s to ``topic`` until :meth:`finish`: :func:`messages`,
    keyed by entity, by the project's producer (acks=all, linger 5 ms).

    ``sent``: records sent; ``failed``: sends the broker did not acknowledge; ``behind_s``:
    the furthest the feed fell behind its schedule (it catches up, so the mean rate holds);
    ``error``: what ended the thread early, if anything."""

    def __init__(self, bootstrap: str, topic: str, features: Sequence[str], rate: float, entities: int,
                 seed: int) -> None:
        super().__init__(name="soak-feed", daemon=True)
        self.bootstrap, self.topic, self.features = bootstrap, topic, tuple(features)
        self.rate, self.entities, self.seed = rate, entities, seed
        self.sent = self.failed = 0
        self.behind_s = 0.0
        self.started_at = self.ended_at = math.nan
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def finish(self, timeout: float = 60.0) -> None:
        self._halt.set()
        if self.ident is not None:  # started
            self.join(timeout)

    def _failure(self, _: Any) -> None:
        self.failed += 1

    def run(self) -> None:
        try:
            prod = make_producer(KafkaConfig(bootstrap_servers=self.bootstrap, client_id="streamvae-soak-feed"))
        except BaseException as e:  # kept for the caller, which reports it
            self.error = e
            return
        msgs = messages(self.features, self.entities, self.seed)
        try:
            self.started_at = t0 = time.perf_counter()
            while not self._halt.is_set():
                due = int((time.perf_counter() - t0) * self.rate) + 1  # record j is due at t0 + j / rate
                self.behind_s = max(self.behind_s, (due - self.sent) / self.rate)
                while self.sent < due:
                    k, v = next(msgs)
                    prod.send(self.topic, key=k, value=v).add_errback(self._failure)
                    self.sent += 1
                time.sleep(0.002)
            self.ended_at = time.perf_counter()
            prod.flush(60)
        except BaseException as e:
            self.error = e
        finally:
            prod.close(10)


# -- the run -------------------------------------------------------------------------------
def soak_config(topics: Topics, path: Path, model: Path) -> Path:
    """The plant's daemon settings (``plant.daemon_sections``) for these topics.

    Memory is bounded by design: the windows, thresholds and episodes keep state for at
    most ``threshold.max_entities`` (100,000) entities each, ten times this feed's; with
    ``threshold.min_history`` 2000 at one window per entity every 5 s no entity gets a
    tracker of its own within the run, and the history ring each one has is allocated in
    full at its first score (core/bank.py).

    What does grow is the copy of those histories in the checkpoint kept in memory for a
    rollback (``ThresholdBank.hist_arrays``: 4 bytes a score), 0.48 MB a minute at 2,000
    windows/s: 12 of the 15 MB the 30-minute soak measured (tracemalloc on the offline
    pipeline puts it first). It stops at ``min_history`` scores an entity (80 MB for
    10,000 entities, reached after 2.8 hours at this rate), when the entity's own tracker
    replaces its history."""
    return write_config(path, daemon_sections(topics.config_sections(), model))


class Sampler:
    """Every call: the daemon's VmRSS, and the group's lag (records between the end offsets
    and the committed ``scored_to``) and commit-position lag (end offsets minus committed
    offsets: the oldest offset still in an open window, about W - 1 readings of every
    entity), each with its time; also written to ``trace`` (CSV) as they come."""

    def __init__(self, bootstrap: str, topics: Topics, pid: int, trace: Path) -> None:
        self.bootstrap, self.topics, self.pid = bootstrap, topics, pid
        self.rss: list[tuple[float, float]] = []
        self.lag: list[tuple[float, float]] = []
        self.commit_lag: list[float] = []
        self._k: Cluster | None = None
        self._trace = trace.open("w")
        self._trace.write("t_s,rss_mb,lag,commit_lag\n")

    def __call__(self, t: float) -> None:
        mb = memory_mb(self.pid)["rss"]
        self.rss.append((t, mb))
        row = ""
        try:
            k = self._k = self._k or Cluster(self.bootstrap, "streamvae-soak")
            ends = k.end_offsets(self.topics.input)
            got = k.committed(self.topics.group, self.topics.input)
            lag = sum(e - min(e, int(got[p][1].get("scored_to", 0))) if p in got else e for p, e in ends.items())
            behind = sum(e - min(e, got[p][0]) if p in got else e for p, e in ends.items())
            self.lag.append((t, lag))
            self.commit_lag.append(behind)
            row = f"{lag},{behind}"
        except (KafkaError, OSError):  # the broker busy or restarting: a sample without lag
            self.close_cluster()
        self._trace.write(f"{t:.1f},{mb:.2f},{row or ','}\n")
        self._trace.flush()

    def close_cluster(self) -> None:
        if self._k is not None:
            self._k.close()
            self._k = None

    def close(self) -> None:
        self.close_cluster()
        self._trace.close()


def run(ctx: Context, minutes: float, rate: float = DEFAULT_RATE, entities: int = ENTITIES,
        every: float = 5.0) -> Outcome:
    """The soak: ``minutes`` of feed at ``rate`` over ``entities`` (see the module doc).

    ``notes``: rss_mb_warm, rss_mb_end, rss_growth, lag_max, lag_bounded (with the two
    thirds' maxima), lag_samples, error_lines (and the first few), rate (achieved), CPU,
    the daemon's counts. ``crashes``: 1 if the daemon exited during the run; then nothing
    is counted lost (its counts died with it)."""
    run_s = minutes * 60.0
    topics = Topics(ctx.bootstrap, partitions=3, prefix="soak-")
    ctx.work.mkdir(parents=True, exist_ok=True)
    log = ctx.work / "soak-daemon.log"
    daemon = DaemonProc(run_cmd(soak_config(topics, ctx.work / "soak.toml", ctx.model)), log)
    out = Outcome("soak")
    feed = SteadyFeed(ctx.bootstrap, topics.input, FEATURES, rate, entities, ctx.seed)
    sample = Sampler(ctx.bootstrap, topics, daemon.proc.pid, ctx.work / "soak-samples.csv")
    totals: dict[str, float] = {}
    t_wall = time.perf_counter()
    try:
        daemon.wait_ready(120.0)
        feed.start()
        t0 = time.monotonic()
        cpu0, own0 = daemon.cpu_seconds(), time.process_time()
        while (t := time.monotonic() - t0) < run_s and daemon.proc.poll() is None and feed.error is None:
            sample(t)
            time.sleep(max(0.0, every - (time.monotonic() - t0 - t)))
        run_s = min(run_s, time.monotonic() - t0)
        cpu = ((daemon.cpu_seconds() - cpu0) / run_s, (time.process_time() - own0) / run_s)
        feed.finish()
        if daemon.proc.poll() is None:
            topics.wait_caught_up(300.0, daemon)
            totals = daemon.totals()
        else:
            out.crashes = 1
    finally:
        feed.finish()
        sample.close()
        rc = daemon.stop()
    if feed.error is not None:
        raise RuntimeError(f"the soak's feed failed: {feed.error!r}") from feed.error
    out.records = feed.sent
    per, extra = divmod(feed.sent, entities)  # the first `extra` entities got one reading more
    out.windows = sum(max(0, per + (e < extra) - WINDOW + 1) for e in range(entities))
    if totals:
        out.lost_records = max(0, feed.sent - int(totals.get("records_total", 0)))
        out.lost_windows = max(0, out.windows - int(totals.get("windows_scored_total", 0)))
    out.wall_s = round(time.perf_counter() - t_wall, 1)
    warm = warmup_s(run_s, WINDOW * entities / rate)
    first, last, growth = rss_growth(sample.rss, warm, run_s)
    bounded, lag_first, lag_last = lag_bounded(sample.lag, warm, run_s, rate * LAG_ALLOWANCE_S)
    errors = error_lines(log.read_text(errors="replace"))
    out.notes.update({
        "minutes": round(run_s / 60, 2), "entities": entities, "rate_target": rate,
        "rate": round(feed.sent / (feed.ended_at - feed.started_at), 1), "feed_behind_s_max": round(feed.behind_s, 3),
        "feed_failed": feed.failed, "warmup_s": round(warm, 1),
        "rss_mb_warm": round(first, 1), "rss_mb_end": round(last, 1), "rss_growth": growth,
        "rss_mb_max": round(max((v for _, v in sample.rss), default=math.nan), 1),
        "lag_max": max((v for _, v in sample.lag), default=math.nan), "lag_first_third_max": lag_first,
        "lag_last_third_max": lag_last, "lag_bounded": bounded, "lag_allowance": rate * LAG_ALLOWANCE_S,
        "commit_lag_max": max(sample.commit_lag, default=math.nan), "lag_samples": len(sample.lag),
        "rss_samples": len(sample.rss), "daemon_cores": round(cpu[0], 3), "feed_and_sampler_cores": round(cpu[1], 3),
        "load_avg_1m": round(os.getloadavg()[0], 2), "error_lines": len(errors), "errors_first": errors[:5],
        "daemon_exit": rc, "dead_letters": totals.get("dead_letters_total", 0.0),
        "alerts": totals.get("alerts_total", 0.0), "windows_scored": totals.get("windows_scored_total", 0.0),
        "log": str(log), "samples": str(ctx.work / "soak-samples.csv"),
    })
    return out


# -- the runner ----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="records/s")
    ap.add_argument("--entities", type=int, default=ENTITIES)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--bootstrap", default=None, help="a broker (default: start a local one)")
    ap.add_argument("--model", default=None, help="a model directory (default: train one)")
    ap.add_argument("--work", default=None, help="a folder for the config, log and samples (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else train_model(work)
    bootstrap, broker = use_broker(args.bootstrap)
    try:
        o = run(Context(bootstrap, model, work, seed=args.seed), args.minutes, args.rate, args.entities,
                args.every)
    finally:
        if broker is not None:
            broker.stop()
    n = o.notes
    rows = [("minutes", n["minutes"]), ("entities", n["entities"]), ("records", o.records),
            ("rate (records/s)", f"{n['rate']} (target {n['rate_target']:g})"), ("warm-up (s)", n["warmup_s"]),
            ("RSS after warm-up (MiB)", n["rss_mb_warm"]), ("RSS at the end (MiB)", n["rss_mb_end"]),
            ("RSS growth", f"{n['rss_growth']:.2%} (target < 5%)"), ("RSS max (MiB)", n["rss_mb_max"]),
            ("lag max (records)", n["lag_max"]),
            ("lag first / last third max", f"{n['lag_first_third_max']} / {n['lag_last_third_max']}"),
            ("lag bounded", f"{n['lag_bounded']} (allowance {n['lag_allowance']:g})"),
            ("commit-position lag max", n["commit_lag_max"]),
            ("CPU: daemon / feed (cores)", f"{n['daemon_cores']} / {n['feed_and_sampler_cores']}"),
            ("error log lines", n["error_lines"]),
            ("windows scored / expected", f"{n['windows_scored']:.0f} / {o.windows}"),
            ("lost records / windows", f"{o.lost_records} / {o.lost_windows}"), ("crashes", o.crashes),
            ("alerts / dead letters", f"{n['alerts']:.0f} / {n['dead_letters']:.0f}"), ("daemon log", n["log"]),
            ("samples (CSV)", n["samples"])]
    for name, v in rows:
        print(f"{name:28s} {v}")
    for line in n["errors_first"]:
        print(f"  {line}")
    print(json.dumps({"soak_rss_growth": n["rss_growth"], **{k: v for k, v in o.as_dict().items() if k != "notes"},
                      **{k: v for k, v in n.items() if k != "errors_first"}}))
    ok = n["rss_growth"] < 0.05 and n["lag_bounded"] and not n["error_lines"] and o.clean
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
