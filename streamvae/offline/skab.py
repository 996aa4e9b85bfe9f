"""SKAB evaluation under the leaderboard's own protocol (outlier detection).

For each of the 34 experiment files: the first 400 rows are the training set, the rest
the test set (no shuffling); a scaler is fitted on the training rows; the detector is
trained on windows of the training rows; every row of the test set gets a 0/1
prediction. Predictions of all files are concatenated and scored as binary
classification against the ``anomaly`` column: F1, FAR (false-alarm rate, %), MAR
(missing-alarm rate, %). See ../shared/data/skab/README.md.

Windows are cut from the whole file (a test row near the split still has its past), and
a row is flagged by the SKAB notebooks' rule: window j covers rows j..j+W-1; row i is
anomalous when the W-1 windows starting at i-W+1 .. i-1 are all above the threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamvae.errors import DataError
from streamvae.offline.csvio import Table, read_table

TRAIN_ROWS = 400
DEFAULT_DATA = Path("..") / "shared" / "data" / "skab"
GROUPS = ("valve1", "valve2", "other")

LEADERBOARD = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla LSTM", 0.54, 12.54, 59.53),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation forest", 0.29, 2.56, 82.89),
]


def data_dir(option: str | None = None) -> Path:
    """--data, else $STREAMVAE_SKAB_DATA, else ../shared/data/skab."""
    p = Path(option or os.environ.get("STREAMVAE_SKAB_DATA") or DEFAULT_DATA)
    if not (p / "valve1").is_dir():
        raise DataError(f"no SKAB data at {p} (expected valve1/, valve2/, other/); pass --data DIR or set STREAMVAE_SKAB_DATA")
    return p


def experiment_files(root: Path) -> list[Path]:
    """The 34 experiment files, in a fixed order."""
    files: list[Path] = []
    for g in GROUPS:
        files += sorted((root / g).glob("*.csv"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)
    if not files:
        raise DataError(f"no experiment CSV files under {root}")
    return files


def load(path: Path) -> tuple[Table, np.ndarray]:
    t = read_table(path, ts_column="datetime", exclude=(), keep=("anomaly", "changepoint"))
    labels = np.asarray([float(v) for v in t.extra["anomaly"]]) > 0.5
    return t, labels


def skab_rule(window_flags: np.ndarray, n_rows: int, w: int) -> np.ndarray:
    """Row flags from stride-1 window flags indexed by window start (the SKAB notebooks' rule)."""
    rows = np.zeros(n_rows, dtype=bool)
    m = len(window_flags)
    if m == 0:
        return rows
    # run[j] = length of the run of flagged windows ending at window j
    c = np.concatenate([[0], np.cumsum(window_flags.astype(np.int64))])
    for i in range(w - 1, m - w + 1):
        lo = i - w + 1
        rows[i] = c[i] - c[lo] == i - lo
    return rows


@dataclass
class Metrics:
    f1: float
    far: float
    mar: float
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @classmethod
    def of(cls, truth: np.ndarray, pred: np.ndarray) -> "Metrics":
        t = truth.astype(bool)
        p = pred.astype(bool)
        tp = int((t & p).sum())
        fp = int((~t & p).sum())
        tn = int((~t & ~p).sum())
        fn = int((t & ~p).sum())
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        return cls(f1, 100.0 * fp / max(1, fp + tn), 100.0 * fn / max(1, fn + tp), tp, fp, tn, fn)

    def row(self) -> dict[str, float]:
        return {"f1": round(self.f1, 4), "far": round(self.far, 2), "mar": round(self.mar, 2)}


@dataclass
class FileResult:
    name: str
    table: Table
    labels: np.ndarray
    scores: np.ndarray  # per window (by start)
    mse: np.ndarray
    threshold: float
    mse_threshold: float
    pred: np.ndarray  # per row
    mse_pred: np.ndarray
    extra: dict[str, object] = field(default_factory=dict)
