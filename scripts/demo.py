#!/usr/bin/env python3
"""The demo behind ``scripts/demo``: a simulated plant into Kafka, the daemon scoring it live,
alerts on screen, then the score card against the injected ground truth.

``scripts/demo`` sets up ``.venv`` and the broker, then runs this with ``--bootstrap``. Steps:

1. topics: ``sensors`` (4 partitions), ``alerts``, ``sensors.dlq`` (run-tagged names when the
   broker was already running, so an earlier run's records never mix in);
2. normal training data for the same plant as the live feed (other seeds), and
   ``streamvae train`` on it;
3. ``streamvae run --config deploy/streamvae.toml`` in the background, settings by
   ``STREAMVAE_<SECTION>__<KEY>`` (printed), log in ``<out>/daemon.log``;
4. ``streamvae simulate`` with every anomaly kind injected (``--truth`` JSON), paced by
   ``--speedup``; meanwhile every alert is printed as it arrives, with what it matches;
5. when the feed is acknowledged and the daemon's committed ``scored_to`` has reached every
   partition's end offset: the score card, a per-kind table, one entity's plot, the report
   (``streamvae report`` from the input, alerts and scores topics: ``<out>/report.html``) and
   the figures as ONE JSON line (the last line of output).

Scoring rules (streamvae/testing/truth.py, as in the integration tests; event time; W = window
length in seconds = window x reading interval):

- an injected episode is *caught* if an ``open`` alert of the same entity has ``window_end``
  in ``[start_ts, end_ts + W + MATCH_MARGIN_S]`` (the last window that still holds an
  anomalous reading ends at ``end_ts + W - interval``; the margin allows the episode's
  ``open_after`` persistence and a rule's half-window);
- a *false episode* is an ``open`` alert that matches no injected episode, counted per
  entity-hour of normal data: entities x feed hours, minus the injected episodes' time;
- ``records_per_s``: records the daemon processed / wall seconds from the start of the feed
  until the daemon had scored all of it. The feed is paced, so this is the feed's rate
  unless the daemon falls behind; ``daemon_cpu_s`` is the CPU time the daemon used
  meanwhile (``records_per_cpu_s`` is at this pace, with small polls: not a capacity
  figure; scripts/bench_e2e.py measures throughput).

Settings, and why (``--quick`` / default):

- the feed starts at a fixed event time (2026-01-01T00:00Z, where the training data ends),
  so one seed gives the same readings every run: the load cycle's phase follows the
  timestamps, and ``simulate``'s default start (now) would change the feed each run.
- the plant: ``--quick`` 6 pumps, 60 min of event time at x30 (2 min), ``all:2`` (14
  episodes); default 10 pumps, 2 h at x24 (5 min), ``all:4`` (28 episodes). One reading per
  pump per second; the load cycle (``period``) is 10 min, so training and the live feed see
  whole cycles.
- anomaly ``gap=180``: two anomalies on one pump are at least 180 s apart, more than a
  window (60 s) plus the daemon's ``close_after`` (one window length: 60 windows, 60 s
  here) plus margin. Closer, and the daemon rightly reports them as one episode, which the
  score card would count as a miss.
- training: ``streamvae train`` with every model default (window 60, early stopping), per
  pump 40 min of normal readings (4 load cycles), then 10.5 min more from another seed,
  passed LAST: the validation split (early stopping, and the held-out scores that
  warm-start the threshold) is the last 20 % of the windows, so it covers every pump at a
  later time, not the last pump alone (which the model then never trained on). About 2
  minutes for 6 pumps on 2 cores.

The daemon runs deploy/streamvae.toml as shipped, which holds the defaults that
``streamvae replay`` and ``streamvae evaluate`` run too (one set of defaults: no setting
is tuned for the demo). What they do here: one fleet-wide SPOT tail at q = 1e-3 for the
whole hour (a pump's own tracker needs a day of its own scores, ``threshold.min_history_s``;
per-pump trackers after 2000 windows, three load cycles, gave 1.03 false episodes per
entity-hour on the quick feed against 0.52 fleet-wide), episodes that open after 8
flagged windows and close after 60 quiet ones, the dead and stuck sensor rules on the
newest half of each window (a 60 s fault fills 31 consecutive windows), and acceptance
of changes that persist, which never applies here (an hour of event time at least).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka.errors import TopicAlreadyExistsError  # noqa: E402

from streamvae.testing.net import free_port  # noqa: E402
from streamvae.testing.procs import DaemonError, DaemonProc, run_cmd, stop, streamvae_cmd, tail  # noqa: E402
from streamvae.testing.topics import Cluster  # noqa: E402
from streamvae.testing.truth import MATCH_MARGIN_S, Score, Truth  # noqa: E402

CONFIG = ROOT / "deploy" / "streamvae.toml"
MARKER = ".streamvae-demo"
INPUT_PARTITIONS = 4
T0 = float(os.environ.get("STREAMVAE_DEMO_T0", time.time()))  # set by scripts/demo: its own start

PLANT = 0  # the fleet's operating points (training and live feed)
FEED_SEED = 1
TRAIN_SEEDS = (11, 12)  # the two training segments: never the live feed's seed
PERIOD_S = 600.0
INTERVAL_S = 1.0  # seconds between two readings of one pump
WINDOW = 60  # the model default: the demo trains with every default (VAEConfig), as a new user would

@dataclass(frozen=True)
class Mode:
    entities: int
    duration: float  # seconds of event time
    speedup: float
    anomalies: str
    train_s: tuple[float, float]  # seconds of normal readings per pump in the two training segments


MODES = {
    "quick": Mode(entities=6, duration=3600.0, speedup=30.0, anomalies="all:2,gap=180", train_s=(2400.0, 630.0)),
    "full": Mode(entities=10, duration=7200.0, speedup=24.0, anomalies="all:4,gap=180", train_s=(2400.0, 630.0)),
}


def say(msg: str = "") -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}" if msg else "", flush=True)


class DemoError(Exception):
    pass


# -- small helpers ----------------------------------------------------------------------


def prepare_out(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoError(f"--out {out} exists and is not a demo folder; choose another")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("scripts/demo output; removed by the next run\n")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a while (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def metrics(daemon: DaemonProc) -> dict[str, float]:
    """The daemon's /metrics as {name{labels}: value}; {} if it does not answer."""
    try:
        return daemon.samples()
    except OSError:
        return {}


def stop_daemon(daemon: DaemonProc) -> int:
    """SIGTERM, then SIGKILL after 30 s; the exit code."""
    return daemon.stop(30.0, on_kill=lambda: say("the daemon did not stop within 30s of SIGTERM; killing it"))


def describe(e: Mapping[str, Any]) -> str:
    return f"{e['kind']} on {'/'.join(e['features'])} ({e['id']})"


# -- the steps --------------------------------------------------------------------------


def train(out: Path, entities: int, train_s: tuple[float, float]) -> Path:
    from streamvae.offline.feed import DEFAULT_START, write_training_csvs

    t = time.monotonic()
    a_s, b_s = train_s
    common = dict(entities=entities, interval=INTERVAL_S, plant=PLANT, period=PERIOD_S)
    part_a = write_training_csvs(out / "train" / "a", seconds=a_s, seed=TRAIN_SEEDS[0],
                                 start_ts=DEFAULT_START - a_s - b_s, **common)  # type: ignore[arg-type]
    part_b = write_training_csvs(out / "train" / "b", seconds=b_s, seed=TRAIN_SEEDS[1],
                                 start_ts=DEFAULT_START - b_s, **common)  # type: ignore[arg-type]
    model = out / "model"
    cmd = [*streamvae_cmd(), "train", *(x for p in part_a + part_b for x in ("--csv", str(p))),
           "--out", str(model), "--seed", "1"]
    say(f"training data: {entities} pumps x ({a_s / 60:.0f} + {b_s / 60:.1f}) min of normal readings (plant {PLANT}, "
        f"seeds {TRAIN_SEEDS}), written in {time.monotonic() - t:.1f}s; training (every model default: window {WINDOW})...")
    with open(out / "train.log", "w") as log:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    if r.returncode != 0:
        raise DemoError(f"streamvae train failed (exit {r.returncode}):\n{tail(out / 'train.log', 15)}")
    say(f"  {r.stdout.strip().splitlines()[-1]}")
    return model


def start_daemon(out: Path, env: dict[str, str], port: int) -> DaemonProc:
    shown = " ".join(f"{k}={v}" for k, v in env.items())
    say(f"daemon: streamvae run --config deploy/streamvae.toml with {shown}")
    daemon = DaemonProc(run_cmd(CONFIG), out / "daemon.log", http_port=port, env=env)
    (out / "daemon.pid").write_text(f"{daemon.proc.pid}\n")
    daemon.wait_ready(180.0)
    say(f"  daemon up (pid {daemon.proc.pid}, model loaded, metrics on http://127.0.0.1:{port}/metrics, "
        f"log {out / 'daemon.log'})")
    return daemon


def run_demo(args: argparse.Namespace) -> int:
    mode = MODES["quick" if args.quick else "full"]
    entities, duration = mode.entities, mode.duration
    speedup: float = args.speedup or mode.speedup
    out = Path(args.out).resolve()
    prepare_out(out)
    tag = "" if args.fresh_broker else "-" + uuid.uuid4().hex[:6]
    topics = {"input": f"sensors{tag}", "alerts": f"alerts{tag}", "dead_letter": f"sensors.dlq{tag}",
              "scores": f"scores{tag}"}
    group = f"streamvae-demo{tag}"
    say(f"broker {args.bootstrap}{'' if args.fresh_broker else ' (already running: run-tagged topics)'}; "
        f"{'--quick' if args.quick else 'full'} run, output in {out}")

    kafka = Cluster(args.bootstrap, client_id="streamvae-demo")
    daemon: DaemonProc | None = None
    sim: subprocess.Popen[str] | None = None
    reader = None
    try:
        try:
            kafka.create({topics["input"]: INPUT_PARTITIONS, topics["alerts"]: 1, topics["dead_letter"]: 1,
                          topics["scores"]: 1})
        except TopicAlreadyExistsError:
            raise DemoError(f"a topic of {sorted(topics.values())} already exists on {args.bootstrap}; the demo needs "
                            "fresh topics") from None
        except TimeoutError as e:
            raise DemoError(str(e)) from None
        say(f"topics: {topics['input']} ({INPUT_PARTITIONS} partitions), {topics['alerts']}, {topics['dead_letter']}, "
            f"{topics['scores']}")

        model = train(out, entities, mode.train_s)

        port = free_port()
        env = {
            "STREAMVAE_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
            "STREAMVAE_TOPICS__INPUT": topics["input"], "STREAMVAE_TOPICS__ALERTS": topics["alerts"],
            "STREAMVAE_TOPICS__DEAD_LETTER": topics["dead_letter"], "STREAMVAE_TOPICS__SCORES": topics["scores"],
            "STREAMVAE_GROUP__ID": group,
            "STREAMVAE_MODEL__PATH": str(model), "STREAMVAE_HTTP__PORT": str(port),
        }
        daemon = start_daemon(out, env, port)

        from streamvae.service.tools import format_alert, kafka_config
        from streamvae.kafka.codec import loads
        from streamvae.kafka.tools import TopicReader

        reader = TopicReader(kafka_config(args.bootstrap), topics["alerts"], from_beginning=True)
        reader.refresh()
        truth_path = out / "truth.json"
        from streamvae.offline.feed import DEFAULT_START

        start = DEFAULT_START  # where the training data ends: the same feed every run (event time)
        cmd = [*streamvae_cmd(), "simulate", "--bootstrap", args.bootstrap, "--topic", topics["input"],
               "--entities", str(entities), "--rate", f"{entities / INTERVAL_S:g}", "--duration", f"{duration:g}",
               "--anomalies", mode.anomalies, "--truth", str(truth_path), "--seed", str(args.seed),
               "--plant", str(PLANT), "--period", f"{PERIOD_S:g}", "--speedup", f"{speedup:g}", "--start", f"{start:.0f}"]
        say(f"feed: {entities} pumps x {duration / 60:.0f} min of event time, 1 reading/s each, at x{speedup:g} "
            f"({duration / speedup:.0f}s), anomalies {mode.anomalies!r}, seed {args.seed}")
        cpu0 = daemon.cpu_seconds()
        t_feed = time.monotonic()
        sim_log = open(out / "simulate.log", "w")
        sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sim_log, text=True, stdin=subprocess.DEVNULL)
        while not truth_path.exists():
            if sim.poll() is not None:
                raise DemoError(f"streamvae simulate exited with {sim.returncode}:\n{tail(out / 'simulate.log', 15)}")
            time.sleep(0.1)
        time.sleep(0.2)
        truth = Truth(json.loads(truth_path.read_text()), WINDOW)
        kinds = sorted({e["kind"] for e in truth.episodes})
        say(f"  {len(truth.episodes)} anomalies will be injected ({', '.join(kinds)}); ground truth in {truth_path}")
        say("alerts as the daemon publishes them (event time; '<-' what each open matches):")

        alerts: list[dict[str, Any]] = []
        seen: set[str] = set()

        def drain(timeout: float) -> None:
            for m in reader.poll(timeout):
                try:
                    a = loads(m.value or b"")
                except ValueError:
                    continue
                if not isinstance(a, dict) or a.get("alert_id") in seen:
                    continue
                seen.add(a["alert_id"])
                alerts.append(a)
                note = ""
                if a.get("kind") == "open":
                    hit = truth.matches(a)
                    note = "  <- " + (", ".join(describe(e) for e in hit) if hit else "no injected anomaly: FALSE ALARM")
                reason = a.get("reason")
                extra = f" [{reason}]" if reason and reason != "score" else ""
                print(f"           {format_alert(a)}{extra}{note}", flush=True)

        sim_out = ""
        t_done = None
        next_note = time.monotonic() + 20
        ends: dict[int, int] = {}
        while True:
            drain(0.5)
            daemon.check_alive()
            if sim is not None and sim.poll() is not None:
                sim_out = (sim.stdout.read() if sim.stdout else "").strip()
                if sim.returncode != 0:
                    raise DemoError(f"streamvae simulate exited with {sim.returncode}:\n{tail(out / 'simulate.log', 15)}")
                say(sim_out.splitlines()[-1] if sim_out else "simulate: done")
                ends = kafka.end_offsets(topics["input"])
                sim = None
            if sim is None:
                done = kafka.scored_to(group, topics["input"])
                if all(done.get(p, 0) >= e for p, e in ends.items() if e > 0):
                    t_done = time.monotonic()
                    break
                if time.monotonic() - t_feed > duration / speedup + 300:
                    raise DemoError(f"the daemon did not catch up within 300 s of the feed's end (scored_to {done}, ends {ends})")
            if time.monotonic() >= next_note:
                next_note = time.monotonic() + 20
                m = metrics(daemon)
                sent = sum(kafka.end_offsets(topics["input"]).values())
                say(f"  ... {sent} records produced, {m.get('streamvae_records_total', 0):.0f} processed by the daemon, "
                    f"{sum(1 for a in alerts if a.get('kind') == 'open')} episodes opened")
        cpu = daemon.cpu_seconds() - cpu0
        m = metrics(daemon)
        records = m.get("streamvae_records_total", 0.0)
        windows = m.get("streamvae_windows_scored_total", 0.0)
        dead_letters = sum(v for k, v in m.items() if k.startswith("streamvae_dead_letters_total"))
        wall = t_done - t_feed
        # the alerts of the last batch were acknowledged before its commit: read to the end
        a_ends = reader.end_offsets()
        while not reader.caught_up(a_ends):
            drain(0.5)
        drain(0.2)
        rc = stop_daemon(daemon)
        say(f"daemon caught up: {records:.0f} records, {windows:.0f} windows scored, {dead_letters:.0f} dead letters, "
            f"in {wall:.1f}s of wall time; stopped with SIGTERM (exit {rc})")
        daemon = None

        card = truth.score(alerts)
        plot, offline = replay_and_plot(out, model, env, truth, alerts, card)
        report = out / "report.html"
        r = subprocess.run([*streamvae_cmd(), "report", "--bootstrap", args.bootstrap, "--input", topics["input"],
                            "--alerts", topics["alerts"], "--scores", topics["scores"], "--out", str(report)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise DemoError(f"streamvae report failed (exit {r.returncode}): {r.stderr.strip()}")
        say(f"report: {report} (one self-contained HTML page: every pump's readings, score, threshold and alerts)")
        summary(args, truth, card, alerts, records, wall, cpu, windows, offline, plot, mode, speedup)
        return 0
    finally:
        if sim is not None:
            stop(sim, 10, on_kill=lambda: say("simulate did not stop within 10s of SIGTERM; killing it"))
        if daemon is not None:
            stop_daemon(daemon)
        if reader is not None:
            reader.close()
        kafka.close()


def replay_and_plot(out: Path, model: Path, env: dict[str, str], truth: Truth, alerts: list[dict[str, Any]],
                    card: Score) -> tuple[Path, dict[str, Any]]:
    """The same feed through the same pipeline offline (scores are not published): per-window
    score and threshold of one pump, plotted with its injected anomalies and its alerts."""
    t = time.monotonic()
    import numpy as np

    from streamvae.config import load_config

    with quiet_stderr():  # TensorFlow's C++ start-up lines
        from streamvae.model import configure_threads

        configure_threads(2)  # the daemon is stopped: both cores are free
        from streamvae.model.artifact import load
    from streamvae.core.records import RecordDecoder
    from streamvae.offline.feed import SensorFeed
    from streamvae.core.compose import build_pipeline

    f, spec = truth.raw["feed"], truth.raw["anomalies"]["spec"]
    feed = SensorFeed(len(f["entities"]), f["rate"], f["duration"], spec, seed=f["seed"], plant=f["plant"],
                      period=f["period"], start_ts=f["start_ts"])
    if [e.to_dict() for e in feed.episodes] != truth.episodes:
        raise DemoError("the re-generated feed does not match the ground truth file")
    det = load(model)
    pipe = build_pipeline(load_config(CONFIG, env={**os.environ, **env}), det)
    dec = RecordDecoder(det.names)
    counts = {e: sum(1 for x in truth.episodes if x["entity"] == e) for e in truth.entities}
    ent = max(truth.entities, key=lambda e: (counts[e], -truth.entities.index(e)))
    rows: list[tuple[float, float, float, bool]] = []
    offline: list[dict[str, Any]] = []
    batch = []
    ts_e, vals_e = [], []
    for rec in feed.records():
        batch.extend(dec.decode(rec))
        if rec["entity"] == ent:
            ts_e.append(rec["ts"])
            vals_e.append([np.nan if rec["values"][n] is None else rec["values"][n] for n in det.names])
        if len(batch) >= 500:
            res = pipe.process(batch)
            rows += [(w.end_ts, w.score, np.nan if w.threshold is None else w.threshold, w.flagged) for w in res.scored if w.entity == ent]
            offline += [a.to_dict() for a in res.alerts]
            batch = []
    res = pipe.process(batch)
    rows += [(w.end_ts, w.score, np.nan if w.threshold is None else w.threshold, w.flagged) for w in res.scored if w.entity == ent]
    offline += [a.to_dict() for a in res.alerts]
    kafka_ids = {a["alert_id"] for a in alerts}
    same = sum(1 for a in offline if a["alert_id"] in kafka_ids)
    info = {"alerts": len(offline), "same": same, "entity": ent, "seconds": time.monotonic() - t}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x0 = truth.start_ts
    ts = (np.asarray(ts_e) - x0) / 60
    vals = np.asarray(vals_e, dtype=float)
    r = np.asarray(rows, dtype=float)
    names = det.names
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(13, 1.0 * len(names) + 3.2), sharex=True,
                             gridspec_kw={"height_ratios": [1] * len(names) + [2.6]})
    eps = [e for e in truth.episodes if e["entity"] == ent]
    mine = [a for a in alerts if a.get("entity") == ent]
    missed = {e["id"] for e in card.missed}
    for i, ax in enumerate(axes):
        for e in eps:
            ax.axvspan((e["start_ts"] - x0) / 60, (e["end_ts"] - x0) / 60, color="orange", alpha=0.35, lw=0)
        for a in mine:
            if a["kind"] == "open":
                ax.axvline((a["window_end"] - x0) / 60, color="tab:red", lw=0.9)
            elif a["kind"] == "close":
                ax.axvline((a["window_end"] - x0) / 60, color="tab:green", lw=0.7, ls=":")
        if i < len(names):
            ax.plot(ts, vals[:, i], lw=0.6, color="tab:blue")
            ax.set_ylabel(names[i], rotation=0, ha="right", fontsize=8)
            ax.tick_params(labelsize=7)
    ax = axes[-1]
    if len(r):
        rt = (r[:, 0] - x0) / 60
        ax.plot(rt, r[:, 1], lw=0.7, color="k", label="score: -log p(x) (offline replay, same model and settings)")
        ax.plot(rt, r[:, 2], lw=1.0, color="tab:red", ls="--", label="threshold (SPOT)")
        fl = r[:, 3] > 0
        ax.scatter(rt[fl], r[fl, 1], s=4, color="tab:red", zorder=3, label="flagged window (score, or a dead/stuck-sensor rule)")
        lo = float(np.nanquantile(r[:, 1], 0.001))
        hi = max(float(np.nanquantile(r[:, 1], 0.995)), float(np.nanmax(r[:, 2])) if np.isfinite(r[:, 2]).any() else lo)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.35 * (hi - lo))
        top = hi + 0.3 * (hi - lo)
        for e in eps:
            ax.text((e["start_ts"] - x0) / 60, top, e["kind"] + (" (missed)" if e["id"] in missed else ""),
                    fontsize=7, va="top", rotation=0, color="0.2")
    ax.legend(fontsize=7, loc="upper left", ncol=1, framealpha=0.9)  # the warm-up, where nothing is injected
    ax.set_xlabel("minutes of event time since the feed started", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.suptitle(f"{ent}: features, score and threshold   (orange: injected anomaly, red line: open alert from Kafka, "
                 f"green dotted: close; scores above the axis clipped)", fontsize=9)
    fig.tight_layout()
    path = out / f"{ent}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path, info


def summary(args: argparse.Namespace, truth: Truth, card: Score, alerts: list[dict[str, Any]], records: float,
            wall: float, cpu: float, windows: float, offline: dict[str, Any], plot: Path, mode: Mode,
            speedup: float) -> None:
    print()
    print("=" * 100)
    n_ent = len(truth.entities)
    print(f"feed      {n_ent} pumps x {truth.duration / 60:.0f} min of event time (1 reading/s each) at x{speedup:g}, "
          f"{truth.raw['feed']['records']} records, anomalies {mode.anomalies!r}, seed {args.seed}")
    rps = records / wall if wall > 0 else float("nan")
    cps = records / cpu if cpu > 0 else float("nan")
    print(f"daemon    {records:.0f} records, {windows:.0f} windows in {wall:.1f}s wall = {rps:.0f} records/s (paced by the "
          f"feed: {n_ent * speedup / INTERVAL_S:.0f}/s); it used {cpu:.1f} CPU-s meanwhile ({100 * cpu / wall:.0f}% of one core)")
    print(f"settings  deploy/streamvae.toml (the defaults); window {WINDOW}; "
          f"match: open alert within [start, end + {truth.window_s:g}s + {MATCH_MARGIN_S:g}s]")
    print()
    print(f"{'kind':<20} {'injected':>8} {'caught':>7} {'missed':>7} {'median delay':>13}")
    for kind in sorted(card.kinds):
        k = card.kinds[kind]
        d = sorted(k.delays)
        med = f"{d[len(d) // 2]:.0f}s" if d else "-"
        print(f"{kind:<20} {k.injected:>8} {k.caught:>7} {k.injected - k.caught:>7} {med:>13}")
    print(f"{'all':<20} {card.episodes:>8} {card.caught:>7} {len(card.missed):>7}")
    for e in card.missed:
        print(f"  missed: {e['entity']} {describe(e)} at +{(e['start_ts'] - truth.start_ts) / 60:.1f} min")
    for a in card.false:
        feats = ", ".join(f.get("name", "?") for f in (a.get("features") or [])[:2])
        print(f"  false episode: {a['entity']} at +{(a['window_end'] - truth.start_ts) / 60:.1f} min, "
              f"score {a['score']:.2f} > threshold {a['threshold']:.2f} ({feats})")
    print()
    ok_r = card.recall >= 0.90
    ok_f = card.false_per_eh <= 1.0
    print(f"recall         {card.recall:.3f} ({card.caught}/{card.episodes} injected episodes alerted)   "
          f"target >= 0.90: {'met' if ok_r else 'NOT MET'}")
    print(f"false episodes {len(card.false)} in {card.entity_hours:.2f} normal entity-hours = "
          f"{card.false_per_eh:.2f} per entity-hour   target <= 1: {'met' if ok_f else 'NOT MET'}")
    print(f"offline check  the same feed through the same pipeline offline: {offline['alerts']} alerts, "
          f"{offline['same']} of them with the same id as the daemon's {len(alerts)} ({offline['seconds']:.1f}s)")
    print(f"plot           {plot} ({offline['entity']}: features, score, threshold, injected spans, alerts)")
    print("=" * 100)
    by_kind = {k: {"injected": v.injected, "caught": v.caught} for k, v in sorted(card.kinds.items())}
    line = json.dumps({
        "recall": round(card.recall, 4), "false_episodes_per_entity_hour": round(card.false_per_eh, 3),
        "records_per_s": round(rps, 1), "caught": card.caught, "missed": len(card.missed),
        "false_episodes": len(card.false), "entities": n_ent, "duration_s": truth.duration,
        "episodes": card.episodes, "normal_entity_hours": round(card.entity_hours, 3), "records": int(records),
        "records_per_cpu_s": round(cps, 1), "daemon_cpu_s": round(cpu, 1), "speedup": speedup, "by_kind": by_kind,
        "targets_met": bool(ok_r and ok_f), "mode": "quick" if args.quick else "full", "plot": str(plot),
        "wall_s": round(time.time() - T0, 1),
    })
    if args.json_file:  # scripts/demo prints it last, after stopping what it started
        Path(args.json_file).write_text(line + "\n")
    else:
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap (scripts/demo passes the broker it uses)")
    p.add_argument("--fresh-broker", action="store_true", help="the broker was started for this run: plain topic names")
    p.add_argument("--quick", action="store_true", help="6 pumps, 40 min of event time at x30 (under 5 minutes in all)")
    p.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder (default out/demo; replaced)")
    p.add_argument("--seed", type=int, default=FEED_SEED, help=f"the live feed's seed (default {FEED_SEED})")
    p.add_argument("--speedup", type=float, default=None, help="event time per wall second (default x30 quick, x24 full)")
    p.add_argument("--json-file", default=None, help="write the final JSON line to this file instead of printing it")
    args = p.parse_args(argv)
    try:
        return run_demo(args)
    except (DemoError, DaemonError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
