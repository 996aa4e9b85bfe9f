"""``streamvae evaluate skab``: the detector on every SKAB file, under the leaderboard protocol."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from streamvae.core.scaler import Scaler
from streamvae.config import Config
from streamvae.core.windows import sliding_windows, typical_interval
from streamvae.model.detector import VAEDetector, default_threshold
from streamvae.model.vae import VAEConfig
from streamvae.offline.skab import TRAIN_ROWS, FileResult, Metrics, experiment_files, load, skab_rule

log = logging.getLogger(__name__)


def evaluate_file(path: Path, cfg: VAEConfig, q: float, margin: float) -> FileResult:
    table, labels = load(path)
    x = table.values
    w = cfg.window
    cfg = replace(cfg, n_features=x.shape[1])
    scaler = Scaler().fit(x[:TRAIN_ROWS])
    train = sliding_windows(x[:TRAIN_ROWS], w, 1)
    det = VAEDetector(cfg, table.feature_names, threshold_q=q, threshold_margin=margin).fit(train.values, scaler=scaler)
    out = det.score(sliding_windows(x, w, 1).values)
    train_out = det.score(train.values)
    thr = det.threshold_
    assert thr is not None
    assert out.mse is not None and train_out.mse is not None  # scored with detail
    mse_thr = default_threshold(train_out.mse, q, margin)
    pred = skab_rule(out.score > thr, len(x), w)
    mse_pred = skab_rule(out.mse > mse_thr, len(x), w)
    return FileResult(
        f"{path.parent.name}/{path.name}", table, labels, out.score, out.mse, thr, mse_thr, pred, mse_pred,
        extra={"epochs": det.fit_info_["epochs_run"], "best_epoch": det.fit_info_["best_epoch"]},
    )


def evaluate_skab(
    root: Path, cfg: VAEConfig, q: float = 0.999, margin: float = 2.0,
    progress: Callable[[FileResult, float], None] | None = None,
) -> tuple[list[FileResult], Metrics, Metrics]:
    """Run the protocol on all files; return per-file results and the pooled metrics of
    the reconstruction-probability detector and of the same network scored by MSE."""
    results = []
    for path in experiment_files(root):
        t0 = time.perf_counter()
        r = evaluate_file(path, cfg, q, margin)
        results.append(r)
        if progress:
            progress(r, time.perf_counter() - t0)
    truth = np.concatenate([r.labels[TRAIN_ROWS:] for r in results])
    pred = np.concatenate([r.pred[TRAIN_ROWS:] for r in results])
    mse_pred = np.concatenate([r.mse_pred[TRAIN_ROWS:] for r in results])
    return results, Metrics.of(truth, pred), Metrics.of(truth, mse_pred)


def evaluate_file_streaming(path: Path, cfg: VAEConfig, det_cfg: Config, batch: int = 50) -> FileResult:
    """The same protocol, with the threshold set online by the daemon's pipeline (its
    configuration ``det_cfg``; no labels used).

    The tracker is warm-started from the scores of the training windows (the first 400
    rows); the test rows are then fed through the streaming pipeline in arrival order
    (primed with the training rows so the first test windows have their past), and each
    window's flag is what the tracker said when that window arrived.
    """
    from streamvae.offline.replay import replay

    table, labels = load(path)
    x = table.values
    w = cfg.window
    cfg = replace(cfg, n_features=x.shape[1], interval=typical_interval(table.ts[:TRAIN_ROWS]))
    scaler = Scaler().fit(x[:TRAIN_ROWS])
    train = sliding_windows(x[:TRAIN_ROWS], w, 1)
    det = VAEDetector(cfg, table.feature_names).fit(train.values, scaler=scaler)
    train_out = det.score(train.values)
    r = replay(table, det, TRAIN_ROWS, None, det_cfg, train_out.score, batch=batch, prime_from=0)
    # row e carries the flag of the window ENDING at e; the SKAB rule indexes windows by start
    wflags = np.zeros(len(x) - w + 1, dtype=bool)
    wscores = np.full(len(x) - w + 1, np.nan)
    ends = np.arange(TRAIN_ROWS, len(x))
    wflags[ends - w + 1] = r.flag[ends] > 0
    wscores[ends - w + 1] = r.score[ends]
    pred = skab_rule(wflags, len(x), w)
    assert train_out.mse is not None  # scored with detail
    mse_thr = default_threshold(train_out.mse)
    return FileResult(
        f"{path.parent.name}/{path.name}", table, labels, wscores, np.full_like(wscores, np.nan), np.nan, mse_thr,
        pred, np.zeros(len(x), dtype=bool),
        extra={"epochs": det.fit_info_["epochs_run"], "best_epoch": det.fit_info_["best_epoch"], "row_threshold": r.threshold},
    )


def evaluate_skab_streaming(
    root: Path, cfg: VAEConfig, det_cfg: Config,
    progress: Callable[[FileResult, float], None] | None = None,
) -> tuple[list[FileResult], Metrics]:
    results = []
    for path in experiment_files(root):
        t0 = time.perf_counter()
        r = evaluate_file_streaming(path, cfg, det_cfg)
        results.append(r)
        if progress:
            progress(r, time.perf_counter() - t0)
    truth = np.concatenate([r.labels[TRAIN_ROWS:] for r in results])
    pred = np.concatenate([r.pred[TRAIN_ROWS:] for r in results])
    return results, Metrics.of(truth, pred)
