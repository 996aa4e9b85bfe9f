"""NAB's scoring (Lavin & Ahmad 2015), in the project's own code.

A file's rows get a *worth* each: inside a labelled window [L, R] (W rows), a detection
at row i sits at ``y = -(R - i + 1) / W`` and is worth ``A_TP * sigma(y) / sigma(-1)``;
outside every window it is a false positive worth ``A_FP * sigma(y)`` with
``y = (i - R') / (W' - 1)`` from the last row R' of the window before it (``-A_FP``
when no window came before). ``sigma(y) = 2 / (1 + exp(5 y)) - 1``, -1 from y = 3 on.
Rows of the probationary period (the first ``min(floor(0.15 n), 750)``) count for
nothing. A window scores its best (earliest) detection, or ``-A_FN`` when it has none;
every false positive counts. The corpus score S is the sum over files; NAB picks, per
profile, the threshold on the detector's scores that maximises S over all files at once,
and reports ``100 (S - S_null) / (S_perfect - S_null)`` with ``S_perfect = A_TP * windows``
and ``S_null = -A_FN * windows``. See ../shared/data/nab-dev/README.md.

Examples
--------
>>> ts = list(range(100))
>>> f = ScoredFile.build("x.csv", ts, [(40, 49)])   # rows 40..49 labelled; probation 15
>>> d = np.zeros(100, bool); d[40] = True
>>> round(f.raw(d, PROFILES["standard"]), 4)        # caught on its first row, no false alarm
1.0
>>> d[90] = True                                     # 41 rows after a 10-row window: full FP cost
>>> round(f.raw(d, PROFILES["standard"]), 4)
0.89
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Profile:
    """One of NAB's cost matrices (``tnWeight`` is not used by the scorer)."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def sigma(y: npt.ArrayLike) -> FloatArray:
    """NAB's scaled sigmoid: +0.987 at y = -1, 0 at y = 0, -0.987 at y = 1, -1 from y = 3."""
    a = np.asarray(y, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(np.minimum(5.0 * a, 700.0))) - 1.0
    return np.where(a >= 3.0, -1.0, out)


def probation_rows(n: int) -> int:
    """Rows NAB leaves to learning: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(0.15 * n), 750))


@dataclass(frozen=True)
class ScoredFile:
    """One file's rows as NAB's scorer sees them.

    window : (n,) index of the window each row is in, -1 outside every window.
    tp_unit : (n,) ``sigma(y) / sigma(-1)`` inside windows (times A_TP is the worth).
    fp_unit : (n,) ``sigma(y)`` outside windows (times A_FP is the worth; negative).
    scorable : (n,) False for probationary rows.
    """

    name: str
    n_windows: int
    window: npt.NDArray[np.int64]
    tp_unit: FloatArray
    fp_unit: FloatArray
    scorable: BoolArray
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def build(cls, name: str, timestamps: npt.ArrayLike, limits: Sequence[tuple[float, float]]) -> "ScoredFile":
        """``limits``: each window's first and last timestamp (inclusive), in time order.
        A window starts at the first row stamped with its first timestamp and ends at the
        first row stamped with its last one (NAB's rule, which matters only for repeated
        timestamps)."""
        ts = np.asarray(timestamps, dtype=np.float64)
        n = len(ts)
        window = np.full(n, -1, dtype=np.int64)
        tp_unit = np.zeros(n)
        fp_unit = np.full(n, -1.0)  # no window before: the full cost
        bounds: list[tuple[int, int]] = []
        for k, (t0, t1) in enumerate(limits):
            lo, hi = _first_at(ts, t0), _first_at(ts, t1)
            if hi < lo:
                raise ValueError(f"{name}: window {k} ends (row {hi}) before it starts (row {lo})")
            bounds.append((lo, hi))
            width = hi - lo + 1
            rows = np.arange(lo, hi + 1)
            window[lo : hi + 1] = k
            tp_unit[lo : hi + 1] = sigma(-(hi - rows + 1) / width) / sigma(-1.0)
        for k, (lo, hi) in enumerate(bounds):
            end = bounds[k + 1][0] if k + 1 < len(bounds) else n
            width = hi - lo + 1
            after = np.arange(hi + 1, end)
            if len(after):
                fp_unit[hi + 1 : end] = sigma((after - hi) / max(width - 1, 1))
        fp_unit[window >= 0] = 0.0
        scorable = np.arange(n) >= probation_rows(n)
        return cls(name, len(bounds), window, tp_unit, fp_unit, scorable, tuple(bounds))

    def raw(self, detected: npt.ArrayLike, profile: Profile) -> float:
        """The file's raw score S for a 0/1 detection per row."""
        d = np.asarray(detected, dtype=bool) & self.scorable
        fp = d & (self.window < 0)
        s = profile.fp * float(self.fp_unit[fp].sum())
        for k in range(self.n_windows):
            hit = np.nonzero(d & (self.window == k))[0]
            s += profile.tp * float(self.tp_unit[hit[0]]) if len(hit) else -profile.fn
        return s

    def caught(self, detected: npt.ArrayLike) -> int:
        """Windows with at least one scorable detection."""
        d = np.asarray(detected, dtype=bool) & self.scorable
        return len(np.unique(self.window[d & (self.window >= 0)]))


def _first_at(ts: FloatArray, t: float) -> int:
    hit = np.nonzero(ts == t)[0]
    if len(hit) == 0:
        raise ValueError(f"no row is stamped {t!r}: a window limit must be a row's timestamp")
    return int(hit[0])


@dataclass(frozen=True, slots=True)
class Sweep:
    """The best corpus-wide threshold for one profile: detection = score >= threshold
    (``threshold`` is None when detecting nothing scores best)."""

    profile: str
    threshold: float | None
    raw: float
    normalised: float


def normalise(raw: float, n_windows: int, profile: Profile) -> float:
    """``100 (S - S_null) / (S_perfect - S_null)``: 0 for detecting nothing, 100 for perfect."""
    null, perfect = -profile.fn * n_windows, profile.tp * n_windows
    return 100.0 * (raw - null) / (perfect - null)


def sweep(files: Sequence[ScoredFile], scores: Sequence[npt.ArrayLike], profile: Profile) -> Sweep:
    """Try every distinct score (and detecting nothing) as the threshold for all files at
    once; keep the one with the largest corpus S (NAB's optimiser)."""
    parts_s, parts_w, parts_tp, parts_fp = [], [], [], []
    offset = 0
    for f, sc in zip(files, scores):
        a = np.asarray(sc, dtype=np.float64)
        keep = f.scorable & np.isfinite(a)
        parts_s.append(a[keep])
        w = f.window[keep]
        parts_w.append(np.where(w >= 0, w + offset, -1))
        parts_tp.append(f.tp_unit[keep])
        parts_fp.append(f.fp_unit[keep])
        offset += f.n_windows
    s = np.concatenate(parts_s) if parts_s else np.empty(0)
    win = np.concatenate(parts_w) if parts_w else np.empty(0, np.int64)
    tp = np.concatenate(parts_tp) * profile.tp if parts_tp else np.empty(0)
    fp = np.concatenate(parts_fp) * profile.fp if parts_fp else np.empty(0)
    order = np.argsort(-s, kind="stable")
    s, win, tp, fp = s[order], win[order], tp[order], fp[order]
    best_raw = total = -profile.fn * offset
    best_thr: float | None = None
    have = np.full(offset, -math.inf)  # best worth detected so far, per window
    n = len(s)
    i = 0
    while i < n:
        j = i
        v = s[i]
        while j < n and s[j] == v:
            k = win[j]
            if k < 0:
                total += fp[j]
            elif tp[j] > have[k]:
                total += tp[j] - (have[k] if have[k] > -math.inf else -profile.fn)
                have[k] = tp[j]
            j += 1
        if total > best_raw:
            best_raw, best_thr = total, float(v)
        i = j
    return Sweep(profile.name, best_thr, best_raw, normalise(best_raw, offset, profile))
