"""Buffer screening for the gate: which windows are robust outliers, and which confirmed
episode windows still look unlike every recent normal window. Rank statistics only, so
two models are each judged on their own score scale.

Examples
--------
>>> roc_auc(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0]))
0.8333333333333334
>>> screen(np.array([1.0, 1.1, 0.9, 1.0, 50.0]), z=4.0).tolist()
[True, True, True, True, False]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import numpy.typing as npt

from streamvae.lifecycle.gate.synthetic import noise_std


def roc_auc(neg: npt.ArrayLike, pos: npt.ArrayLike) -> float:
    """P(score of an anomaly > score of a normal window), ties counting one half (the
    Mann-Whitney form of the ROC AUC). Scores: higher = more anomalous; NaN left out."""
    n = np.sort(np.asarray(neg, dtype=np.float64))
    p = np.asarray(pos, dtype=np.float64)
    n, p = n[np.isfinite(n)], p[np.isfinite(p)]
    if len(n) == 0 or len(p) == 0:
        return math.nan
    lo = np.searchsorted(n, p, side="left")
    hi = np.searchsorted(n, p, side="right")
    return float(np.mean(lo + 0.5 * (hi - lo)) / len(n))


def screen(scores: npt.ArrayLike, z: float) -> npt.NDArray[np.bool_]:
    """True for the scores kept: not above median + z x 1.4826 MAD (robust to up to half
    of them being outliers)."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    if not ok.any():
        return ok
    med = float(np.median(s[ok]))
    mad = 1.4826 * float(np.median(np.abs(s[ok] - med)))
    return ok & (s <= med + z * max(mad, 1e-12))


def screen_by_entity(scores: npt.NDArray[np.float64], entities: Sequence[str] | None, z: float) -> npt.NDArray[np.bool_]:
    """:func:`screen` within each entity (a new operating point moves all of an entity's
    windows together; a fault is a minority of them)."""
    if entities is None:
        return screen(scores, z)
    ent = np.asarray(entities)
    keep = np.zeros(len(scores), dtype=bool)
    for e in np.unique(ent):
        m = ent == e
        keep[m] = screen(scores[m], z)
    return keep


def _nn_dist(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], exclude_self: bool = False) -> npt.NDArray[np.float64]:
    """Distance from each row of ``a`` to its nearest row of ``b`` (squared-norm expansion, in chunks)."""
    bb = np.einsum("ij,ij->i", b, b)
    out = np.empty(len(a))
    for lo in range(0, len(a), 512):
        c = a[lo : lo + 512]
        d2 = np.einsum("ij,ij->i", c, c)[:, None] + bb[None, :] - 2.0 * c @ b.T
        if exclude_self:
            d2[np.arange(len(c)), np.arange(lo, lo + len(c))] = np.inf
        out[lo : lo + 512] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def still_anomalous(anomalies: npt.ArrayLike, normals: npt.ArrayLike, q: float = 0.99) -> npt.NDArray[np.bool_]:
    """True for the confirmed windows that do not look like any recent normal window.

    A window of a past episode counts as an anomaly only while it is farther (in units of
    each feature's noise std, missing cells as the feature's median) from its nearest
    recent normal window than ``q`` of the recent normals are from theirs. Model-free on
    purpose: the episodes were opened by a model, so they are biased in its favour, and
    after a move to a new operating point most of the stale model's "confirmed" episodes
    are the new normal (measured in tests/unit/offline/test_replay_retrain.py)."""
    n = np.asarray(normals, dtype=np.float64)
    a = np.asarray(anomalies, dtype=np.float64)
    if len(a) == 0 or len(n) < 3:
        return np.zeros(len(a), dtype=bool)
    sd = noise_std(n.astype(np.float32))
    med = np.nanmedian(n.reshape(-1, n.shape[2]), axis=0)
    nz = (np.where(np.isnan(n), med, n) / sd).reshape(len(n), -1)
    az = (np.where(np.isnan(a), med, a) / sd).reshape(len(a), -1)
    limit = float(np.quantile(_nn_dist(nz, nz, exclude_self=True), q))
    return _nn_dist(az, nz) > limit
