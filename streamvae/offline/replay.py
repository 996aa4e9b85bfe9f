"""``streamvae replay``: recorded data through the streaming pipeline, as if it arrived live.

The first part of the file trains the initial model (or ``--model`` loads one); the rest
is fed, in order and in poll-sized batches, through the SAME :class:`StreamPipeline`
the daemon drives, built by :func:`streamvae.core.compose.build_pipeline` from the same
configuration (the daemon's defaults, or ``--config``). One output row per input row:
ts, entity, part (``train`` for the rows the model learned from, ``live`` for the
rest), score (blank while the entity has no full window yet), threshold, flag, alert
kind.

With a :class:`ReplayRetrainer` (``--retrain``) replay back-tests the retraining loop:
it drives the same :class:`~streamvae.lifecycle.loop.Lifecycle` as the daemon's retrain
worker (buffers, trigger, training-window choice, gate, recalibration windows), asked
after every batch with time = the batch's last reading; a due retrain runs
synchronously between two batches, where the daemon would swap, and a candidate that
passes the gate is swapped in with thresholds recalibrated as the daemon's hot swap does
(:mod:`streamvae.lifecycle.recalibrate`).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from streamvae.config import Config, RetrainConfig
from streamvae.core.compose import build_pipeline
from streamvae.core.pipeline import BatchResult, Reading, StreamPipeline
from streamvae.core.scaler import Scaler
from streamvae.core.windows import sliding_windows, typical_interval
from streamvae.errors import ConfigError, DataError, StreamvaeError
from streamvae.lifecycle.loop import Lifecycle
from streamvae.lifecycle.recalibrate import above_own, install, recalibration_scores
from streamvae.offline.csvio import Table

log = logging.getLogger(__name__)


def split_point(spec: str, n: int) -> int:
    """``--train-first``: a fraction in (0, 1) of the rows, or a row count."""
    try:
        v = float(spec)
    except ValueError:
        raise ConfigError(f"--train-first must be a fraction in (0, 1) or a number of rows; got {spec!r}") from None
    if 0 < v < 1:
        k = int(round(v * n))
    elif v >= 1 and v == int(v):
        k = int(v)
    else:
        raise ConfigError(f"--train-first must be a fraction in (0, 1) or a number of rows; got {spec!r}")
    if not 0 < k < n:
        raise ConfigError(f"--train-first {spec} leaves no rows to replay (file has {n} rows)")
    return k


def entity_series(table: Table, entity_column: str | None, rows: range) -> dict[str, np.ndarray]:
    """Row indices per entity (file order) within ``rows``."""
    ents = table.extra[entity_column] if entity_column else None
    by: dict[str, list[int]] = defaultdict(list)
    for i in rows:
        by[ents[i] if ents else "default"].append(i)
    return {e: np.asarray(ix) for e, ix in by.items()}


MIN_HELDOUT = 200  # fewer held-out windows than this: warm-start the thresholds from every training window


def train_on(table: Table, entity_column: str | None, k: int, cfg: Any,
             on_epoch: Callable[[Any], None] | None = None) -> tuple[Any, np.ndarray]:
    """Fit a VAEDetector on the first ``k`` rows (windows cut per entity); return it and
    the scores of its training windows. The training data's sampling interval is stored
    with the model (``config.interval``: it derives the gap rule). ``on_epoch``: each
    epoch's :class:`~streamvae.model.vae.EpochLog`, for a progress display."""
    from streamvae.model.detector import VAEDetector

    series = entity_series(table, entity_column, range(k))
    if cfg.interval is None:
        cfg = replace(cfg, interval=typical_interval(*(table.ts[ix] for ix in series.values())))
    parts = []
    for ix in series.values():
        parts.append(sliding_windows(table.values[ix], cfg.window, cfg.stride, table.ts[ix], cfg.max_gap).values)
    windows = np.concatenate(parts) if parts else np.empty((0, cfg.window, len(table.feature_names)))
    if len(windows) < 10:
        raise DataError(f"the first {k} rows give {len(windows)} training windows of {cfg.window}; need at least 10")
    scaler = Scaler().fit(table.values[:k])
    det = VAEDetector(cfg, table.feature_names).fit(windows, scaler=scaler, on_epoch=on_epoch)
    return det, det.score_samples(windows)


def warm_scores(det: Any, train_scores: np.ndarray) -> np.ndarray:
    """The scores that warm-start the thresholds: the held-out windows', or every
    training window's when the held-out part is too small to describe a tail."""
    held = np.asarray(det.heldout_scores_, dtype=np.float64)
    return held if len(held) >= MIN_HELDOUT else np.asarray(train_scores, dtype=np.float64)


@dataclass
class ReplayResult:
    """Per input row (every row of the table): score, threshold, flag and alert kinds of
    the window ending there; ``replayed`` are the rows fed live (the rest trained or
    primed the model)."""

    score: np.ndarray
    threshold: np.ndarray
    flag: np.ndarray
    alert: list[str]
    alerts: list[dict[str, Any]]
    replayed: range
    version: list[str] | None = None  # per row: the model version serving when it was read
    retrains: list["RetrainEvent"] | None = None
    refused: Counter[str] = field(default_factory=Counter)  # rows refused, by reason
    clock_resets: int = 0  # steps back in time that started a new window sequence
    repeated_ts: int = 0  # rows stamped like their entity's previous row (taken in arrival order)
    accepted: int = 0  # persisting changes accepted as an entity's new normal

    def summary(self) -> str:
        """One line: what happened to the rows that did not simply get a score."""
        refused = sum(self.refused.values())
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.refused.items()))
        return (f"refused {refused} rows" + (f" ({why})" if why else "") + f"; {self.clock_resets} clock steps back "
                f"(a new window sequence each); {self.repeated_ts} repeated timestamps (taken in arrival order); "
                f"{self.accepted} changes accepted as a new normal")


@dataclass(frozen=True)
class RetrainEvent:
    """One retrain during a replay: when (stream time), why, and what the gate said."""

    at: float
    reason: str
    passed: bool
    version: str | None  # the version swapped in; None when rejected or failed
    reasons: list[str]
    seconds: float
    normals: int
    anomalies: int
    above_own: float = float("nan")  # promoted: share of the recent windows above its own threshold
    own_threshold: float | None = None  # promoted: its own training threshold

    def summary(self) -> str:
        outcome = f"promoted {self.version}" if self.passed else "rejected"
        if self.passed and self.above_own == self.above_own:
            outcome += f" ({100 * self.above_own:.1f}% of the recent windows above its own threshold)"
        return (f"retrain at ts {self.at:.0f} ({self.reason}) on {self.normals} normal windows, {self.anomalies} "
                f"confirmed anomalies: {outcome} in {self.seconds:.1f}s: " + "; ".join(self.reasons))


class ReplayRetrainer:
    """The retraining loop inside a replay (see the module doc).

    Parameters
    ----------
    rcfg : the ``[retrain]`` settings (buffer size, sampling, margin, trigger, epochs, tolerance).
    window, n_features : the model's W and F.
    seed : buffer sampling and candidate training (the daemon's: 0).
    """

    def __init__(self, rcfg: RetrainConfig, window: int, n_features: int, seed: int = 0) -> None:
        self.lifecycle = Lifecycle(rcfg, window, n_features, seed)
        self.events: list[RetrainEvent] = []

    @property
    def buffer(self) -> Any:
        return self.lifecycle.buffer

    @property
    def bank(self) -> Any:
        return self.lifecycle.bank

    def after_batch(self, pipe: StreamPipeline, res: BatchResult, now: float) -> None:
        """Feed one batch's result to the lifecycle; retrain if due."""
        self.lifecycle.observe(res)
        reason = self.lifecycle.due(now)
        if reason is not None:
            self.run(pipe, reason, now)

    def run(self, pipe: StreamPipeline, reason: str, now: float) -> RetrainEvent:
        """Retrain synchronously; swap the model in on a pass."""
        lc = self.lifecycle
        seed = lc.started(now)
        t0 = time.perf_counter()
        data = lc.training_set()
        version: str | None = None
        behind, own = float("nan"), None
        try:
            cand, rep = lc.candidate(pipe.scorer, seed, data)
            passed, reasons = rep.passed, list(rep.reasons)
            if passed:
                version = f"{pipe.model_version.split('+retrain-')[0]}+retrain-{lc.attempts_}"
                cand.version_ = version
                scores = recalibration_scores(cand, lc.recalibration_windows())
                install(pipe, cand, version, scores)
                behind, own = above_own(cand, scores), cand.threshold_
        except (StreamvaeError, ValueError) as e:  # NotCalibratedError, DataError, ConfigError
            passed, version, reasons = False, None, [f"retrain failed: {e}"]
        lc.finished(now, passed)
        if passed:
            lc.model_swapped(behind, own)
        ev = RetrainEvent(now, reason, passed, version, reasons, time.perf_counter() - t0, len(data.normals),
                          len(data.anomalies), behind, own)
        log.info("%s", ev.summary())
        self.events.append(ev)
        return ev


def replay(table: Table, det: Any, start: int, entity_column: str | None, cfg: Config, warm: np.ndarray,
           batch: int = 500, prime_from: int | None = None, retrainer: ReplayRetrainer | None = None,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Feed rows ``start..`` through the daemon's pipeline (``build_pipeline(cfg, det,
    warm)``) in batches of ``batch`` readings.

    ``prime_from``: rows ``prime_from..start-1`` are pushed into the windows unscored
    first, so the first replayed rows already have their past (as in a live feed that
    was running before the model was swapped in). ``retrainer``: retrain between
    batches (see :class:`ReplayRetrainer`); the result then carries each row's model
    version and the retrain events. ``progress(done, total)``: rows replayed so far, after
    every batch.
    """
    n = len(table.values)
    ents = table.extra[entity_column] if entity_column else ["default"] * n
    pipe = build_pipeline(cfg, det, warm)
    pipe.model_version = det.version_ or "unsaved"
    version: list[str] | None = [pipe.model_version] * n if retrainer is not None else None
    row_of: dict[str, list[int]] = defaultdict(list)
    vals = table.values.astype(np.float32)
    if prime_from is not None:
        prime = [Reading(ents[i], float(table.ts[i]), vals[i]) for i in range(prime_from, start)]
        pipe.prime(prime)
        for i in range(prime_from, start):
            row_of[ents[i]].append(i)
    score = np.full(n, np.nan)
    thr = np.full(n, np.nan)
    flag = np.zeros(n, dtype=np.int8)
    alert = [""] * n
    alerts: list[dict[str, Any]] = []
    refused: Counter[str] = Counter()
    resets0, repeats0 = pipe.assembler.clock_resets_, pipe.assembler.repeated_ts_
    try:
        for lo in range(start, n, batch):
            rows = range(lo, min(n, lo + batch))
            readings = [Reading(ents[i], float(table.ts[i]), vals[i]) for i in rows]
            if version is not None:
                version[rows.start : rows.stop] = [pipe.model_version] * len(rows)
            res = pipe.process(readings)
            rejected = {j for j, _ in res.rejected}
            for j, e in res.rejected:
                alert[rows[j]] = f"refused:{e.reason}"
                refused[e.reason] += 1
            for j, i in enumerate(rows):
                if j not in rejected:
                    row_of[ents[i]].append(i)
            for w in res.scored:
                i = row_of[w.entity][w.end_index]
                score[i] = w.score
                thr[i] = math.nan if w.threshold is None else w.threshold
                flag[i] = int(w.flagged)
            for a in res.alerts:
                i = _row_at(row_of[a.entity], table.ts, a.window_end)
                alert[i] = a.kind if not alert[i] else alert[i] + "+" + a.kind
                alerts.append(a.to_dict())
            if retrainer is not None:
                retrainer.after_batch(pipe, res, float(table.ts[rows.stop - 1]))
            if progress is not None:
                progress(rows.stop - start, n - start)
    finally:
        pipe.close()
    return ReplayResult(score, thr, flag, alert, alerts, range(start, n), version,
                        retrainer.events if retrainer is not None else None, refused,
                        pipe.assembler.clock_resets_ - resets0, pipe.assembler.repeated_ts_ - repeats0, pipe.accepted_)


def _row_at(rows: list[int], ts: np.ndarray, t: float) -> int:
    """The latest row of an entity with timestamp ``t`` (alerts are rare: a short scan)."""
    for i in reversed(rows):
        if ts[i] == t:
            return i
    return rows[-1]


def write_rows(dest: Path, table: Table, entity_column: str | None, r: ReplayResult) -> None:
    """One CSV row per input row, LF line endings, scores at full precision (``repr``)."""
    ents = table.extra[entity_column] if entity_column else ["default"] * len(table.values)
    live = r.replayed
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            # model_version only with retraining: without it one model serves every row
            w.writerow(["ts", "entity", "part", "score", "threshold", "flag", "alert"] + (["model_version"] if r.version else []))
            for i in range(len(table.values)):
                s, t = r.score[i], r.threshold[i]
                w.writerow([table.ts_text[i], ents[i], "live" if i in live else "train", "" if math.isnan(s) else repr(float(s)),
                            "" if math.isnan(t) else repr(float(t)), int(r.flag[i]), r.alert[i]]
                           + ([r.version[i]] if r.version else []))
    except OSError as e:
        raise DataError(f"cannot write {dest}: {e.strerror or e}") from e


def default_config(n_features: int, **kw: Any) -> Any:
    from streamvae.model.vae import VAEConfig

    return replace(VAEConfig(n_features=n_features), **kw)
