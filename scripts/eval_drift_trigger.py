#!/usr/bin/env python
"""The drift trigger on a stable plant and on a slow move, testing every window against
testing 1 in ``retrain.sample_every`` per entity (streamvae/lifecycle/trigger.py).

The plant is tests/integration/test_retrain_drift.py's: 8 pumps, one reading a second,
its first model trained as that test's fixture trains it (``streamvae train``, W = 30).
The feed's 30 min before the drift, then the 30 min of the drift part (the mean load
moves 1 -> 1.25 over 15 min, then stays), are scored by that model; windows above the
model's own training threshold count as flagged and are not fed, as the pipeline feeds
only unflagged ones. The part before the drift comes in 10 orders: time order from 4
starting points, and as a backlog is read (3 partitions, 8, 100 or 1,000 records of one
partition at a time, 2 draws each); the drift part follows in time order. For each
order and each ``drift_every`` (1, and the shipped ``sample_every``) a fresh
RetrainTrigger is fed window by window: does it report drift before the drift, and if
not, how many seconds into the 900 s ramp.

Prints a table, then one JSON line. About 30 s (most of it training the model).

    .venv/bin/python scripts/eval_drift_trigger.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streamvae.config import RetrainConfig
from streamvae.lifecycle.trigger import RetrainTrigger
from streamvae.offline.feed import DEFAULT_START, FEATURES, SensorFeed, write_training_csvs
from streamvae.testing.procs import streamvae_cmd

ENTITIES, PERIOD_S, W = 8, 600.0, 30
BEFORE_S, RAMP_S, HOLD_S, AFTER_S = 1800.0, 900.0, 900.0, 2700.0
ANOMALIES = "spike:4,level_shift:4,drift:4,noise_burst:4,broken_correlation:4,duration=60,gap=120"


def train(d: Path) -> Path:
    """The drift test's first model (its ``plant_model`` fixture)."""
    a_s, b_s = 2400.0, 630.0
    common: dict[str, Any] = dict(entities=ENTITIES, interval=1.0, plant=0, period=PERIOD_S)
    parts = (write_training_csvs(d / "a", seconds=a_s, seed=11, start_ts=DEFAULT_START - a_s - b_s, **common)
             + write_training_csvs(d / "b", seconds=b_s, seed=12, start_ts=DEFAULT_START - b_s, **common))
    out = d / "model"
    cmd = [*streamvae_cmd(), "train", *(x for p in parts for x in ("--csv", str(p))), "--out", str(out), "--window", str(W),
           "--encoder", "64,32", "--latent", "8", "--epochs", "40", "--seed", "1", "--max-gap", "30", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def scored_feed(model: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Per window in time order: score, entity, end_index, end time (s from the start);
    and the model's own threshold."""
    from streamvae.model import artifact

    end = BEFORE_S + RAMP_S + HOLD_S  # the test's feed goes on 45 min with faults; they are not read here
    feed = SensorFeed(ENTITIES, float(ENTITIES), end + AFTER_S, f"{ANOMALIES},warmup={end}", seed=1, plant=0,
                      period=PERIOD_S, shift=0.25, shift_at=BEFORE_S, shift_over=RAMP_S)
    rows: dict[str, list[list[float]]] = {}
    order: list[tuple[str, int, float]] = []
    for r in feed.records():
        if r["ts"] - DEFAULT_START >= end:
            break
        rows.setdefault(r["entity"], []).append([r["values"][f] for f in FEATURES])
        order.append((r["entity"], len(rows[r["entity"]]) - 1, r["ts"] - DEFAULT_START))
    arr = {e: np.asarray(v, np.float32) for e, v in rows.items()}
    done = [(e, i, t) for e, i, t in order if i >= W - 1]
    X = np.stack([arr[e][i - W + 1:i + 1] for e, i, _ in done])
    det = artifact.load(model)
    scores = np.asarray(det.score_samples(X), np.float64)
    return (scores, np.asarray([e for e, _, _ in done]), np.asarray([i for _, i, _ in done]),
            np.asarray([t for _, _, t in done]), float(det.threshold_))


def backlog_order(idx: list[int], entity: np.ndarray, chunk: int, rng: np.random.Generator) -> list[int]:
    """``idx`` as a backlog of 3 partitions is read: ``chunk`` records of one, then another."""
    names = sorted(set(entity[idx]))
    part = {e: int(rng.integers(3)) for e in names}
    queues = [[i for i in idx if part[entity[i]] == p] for p in range(3)]
    out: list[int] = []
    pos = [0, 0, 0]
    while any(pos[p] < len(queues[p]) for p in range(3)):
        for p in rng.permutation(3):
            out.extend(queues[p][pos[p]:pos[p] + chunk])
            pos[p] += chunk
    return out


def first_drift(seq: list[int], every: int, scores: np.ndarray, ends: np.ndarray, t: np.ndarray, own: float) -> float | None:
    """Plant time (s) of the window at which the trigger first reports drift, or None."""
    trig = RetrainTrigger(drift="adwin", min_interval=0.0, min_windows=0, drift_every=every)
    assert trig.detector_ is not None
    for i in seq:
        if scores[i] <= own:
            trig.observe_scores([scores[i]], [int(ends[i])])
            if trig.detector_.detected_ is not None:
                return float(t[i])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="the backlog orders' draws")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        scores, entity, ends, t, own = scored_feed(train(Path(d)))
    before = [i for i in range(len(t)) if t[i] < BEFORE_S]
    drift = [i for i in range(len(t)) if t[i] >= BEFORE_S]
    step = len(before) // 4
    rng = np.random.default_rng(args.seed)
    orders = [(f"time order from window {k * step}", before[k * step:]) for k in range(4)]
    orders += [(f"backlog, {chunk} records a partition", backlog_order(before, entity, chunk, rng))
               for chunk in (8, 100, 1000) for _ in range(2)]
    shipped = RetrainConfig().sample_every
    out: dict[str, Any] = {"orders": len(orders), "own_threshold": round(own, 2)}
    print(f"{'order':38s} {'every window':>16s} {f'1 in {shipped}':>16s}")
    found: dict[int, list[float | None]] = {1: [], shipped: []}
    for name, seq in orders:
        cells = []
        for every in (1, shipped):
            at = first_drift(seq + drift, every, scores, ends, t, own)
            found[every].append(at)
            cells.append("none" if at is None else "BEFORE the drift" if at < BEFORE_S else f"ramp + {at - BEFORE_S:.0f} s")
        print(f"{name:38s} {cells[0]:>16s} {cells[1]:>16s}")
    for every, ats in found.items():
        ramp = [a - BEFORE_S for a in ats if a is not None and a >= BEFORE_S]
        out[f"every_{every}"] = {"before_the_drift": sum(a is not None and a < BEFORE_S for a in ats),
                                 "in_the_ramp": sum(r < RAMP_S for r in ramp), "ramp_s": [round(r) for r in ramp]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
