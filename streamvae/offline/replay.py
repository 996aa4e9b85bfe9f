"""``streamvae replay``: recorded data through the streaming pipeline, as if it arrived live.

The first part of the file trains the initial model (or ``--model`` loads one); the rest
is fed, in order and in poll-sized batches, through the SAME :class:`StreamPipeline`
the daemon drives. One output row per input row: ts, entity, score (blank while the
entity has no full window yet), threshold, flag, alert kind.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamvae.core.episodes import EpisodeTracker
from streamvae.core.pipeline import Reading, StreamPipeline
from streamvae.core.scaler import Scaler
from streamvae.core.thresholds import ThresholdBank
from streamvae.core.windows import WindowAssembler, sliding_windows
from streamvae.errors import ConfigError, DataError
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


def train_on(table: Table, entity_column: str | None, k: int, cfg: Any) -> tuple[Any, np.ndarray]:
    """Fit a VAEDetector on the first ``k`` rows (windows cut per entity); return it and
    the scores of its training windows."""
    from streamvae.model.detector import VAEDetector

    parts = []
    for ix in entity_series(table, entity_column, range(k)).values():
        parts.append(sliding_windows(table.values[ix], cfg.window, cfg.stride, table.ts[ix], cfg.max_gap).values)
    windows = np.concatenate(parts) if parts else np.empty((0, cfg.window, len(table.feature_names)))
    if len(windows) < 10:
        raise DataError(f"the first {k} rows give {len(windows)} training windows of {cfg.window}; need at least 10")
    scaler = Scaler().fit(table.values[:k])
    det = VAEDetector(cfg, table.feature_names).fit(windows, scaler=scaler)
    return det, det.score_samples(windows)


@dataclass
class ReplayResult:
    score: np.ndarray
    threshold: np.ndarray
    flag: np.ndarray
    alert: list[str]
    alerts: list[dict[str, Any]]
    replayed: range


def replay(table: Table, det: Any, start: int, entity_column: str | None, bank: ThresholdBank,
           episodes: EpisodeTracker, batch: int = 500, prime_from: int | None = None) -> ReplayResult:
    """Feed rows ``start..`` through a StreamPipeline in batches of ``batch`` readings.

    ``prime_from``: rows ``prime_from..start-1`` are pushed into the windows unscored
    first, so the first replayed rows already have their past (as in a live feed that
    was running before the model was swapped in).
    """
    cfg = det.config
    n = len(table.values)
    ents = table.extra[entity_column] if entity_column else ["default"] * n
    asm = WindowAssembler(cfg.window, 1, len(table.feature_names), max_gap=cfg.max_gap, max_lateness=0.0)
    pipe = StreamPipeline(det, bank, episodes, asm, det.version_ or "unsaved")
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
    for lo in range(start, n, batch):
        rows = range(lo, min(n, lo + batch))
        readings = [Reading(ents[i], float(table.ts[i]), vals[i]) for i in rows]
        res = pipe.process(readings)
        rejected = {j for j, _ in res.rejected}
        for j, e in res.rejected:
            alert[rows[j]] = f"rejected:{e.reason}"
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
    return ReplayResult(score, thr, flag, alert, alerts, range(start, n))


def _row_at(rows: list[int], ts: np.ndarray, t: float) -> int:
    """The latest row of an entity with timestamp ``t`` (alerts are rare: a short scan)."""
    for i in reversed(rows):
        if ts[i] == t:
            return i
    return rows[-1]


def write_rows(dest: Path, table: Table, entity_column: str | None, r: ReplayResult) -> None:
    ents = table.extra[entity_column] if entity_column else ["default"] * len(table.values)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ts", "entity", "score", "threshold", "flag", "alert"])
            for i in r.replayed:
                s, t = r.score[i], r.threshold[i]
                w.writerow([table.ts_text[i], ents[i], "" if math.isnan(s) else f"{s:.4f}",
                            "" if math.isnan(t) else f"{t:.4f}", int(r.flag[i]), r.alert[i]])
    except OSError as e:
        raise DataError(f"cannot write {dest}: {e.strerror or e}") from e


def default_config(n_features: int, **kw: Any) -> Any:
    from streamvae.model.vae import VAEConfig

    return replace(VAEConfig(n_features=n_features), **kw)
