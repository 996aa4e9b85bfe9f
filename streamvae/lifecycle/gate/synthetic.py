"""The gate's synthetic anomalies: a fixed, seeded set of perturbed copies of held-out
normal windows, sized in each feature's noise so they mean the same at any operating point.

The kinds and their effect are :mod:`streamvae.lifecycle.inject`'s (shared with the
simulated plant); the sizes here sit near the edge of what a sharp model sees.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> normals = rng.normal(0.0, 1.0, (50, 8, 2)).astype(np.float32)
>>> a = synthetic_anomalies(normals, n_per_kind=10, seed=1)
>>> list(a) == list(SYNTHETIC_KINDS), a["spike"].shape
(True, (10, 8, 2))
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.lifecycle.inject import inject

# the simulator's kinds but ``dead`` (missing data is left out of the likelihood by design)
SYNTHETIC_KINDS = ("spike", "level_shift", "noise_burst", "stuck", "broken_correlation", "drift")
# sizes in units of the feature's noise std, chosen so a sharp model still ranks most
# perturbed windows above most normals without every model reaching AUC 1 (where the
# gate could not tell a sharp model from a blurry one)
SPIKE_STD = 6.0
SHIFT_STD = 3.0
BURST_FACTOR = 4.0
RAMP_STD = 5.0


def noise_std(windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """(F,) robust noise std per feature: MAD of first differences within windows / sqrt 2."""
    d = np.diff(windows.astype(np.float64), axis=1).reshape(-1, windows.shape[2])
    out = np.empty(windows.shape[2])
    for f in range(windows.shape[2]):
        col = d[:, f][np.isfinite(d[:, f])]
        out[f] = 1.4826 * float(np.median(np.abs(col - np.median(col)))) / math.sqrt(2) if len(col) else 0.0
    return np.maximum(out, 1e-6)


def synthetic_anomalies(normals: npt.ArrayLike, n_per_kind: int = 200, seed: int = 0) -> dict[str, npt.NDArray[np.float32]]:
    """A fixed, seeded set of perturbed copies of normal windows (N, W, F), per kind.

    One feature per window (chosen at random) is perturbed, in units of its noise std:
    ``spike`` +/-6 std on 1-3 readings; ``level_shift`` +/-3 std from a random point to the
    end (at least a third of the window); ``noise_burst`` noise x4 over half the window;
    ``stuck`` the feature repeats its first value over the whole window;
    ``broken_correlation`` the feature is taken from another normal window (its own
    range, the wrong moment); ``drift`` a linear ramp to +/-5 std.
    """
    x = np.asarray(normals, dtype=np.float32)
    if x.ndim != 3 or len(x) < 2:
        raise DataError(f"need at least 2 normal windows (n, W, F) to perturb; got shape {x.shape}")
    m, w, nf = x.shape
    sd = noise_std(x)
    rng = np.random.default_rng(seed)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for kind in SYNTHETIC_KINDS:
        idx = rng.choice(m, size=min(n_per_kind, m), replace=False)
        y = x[idx].astype(np.float64)
        feats = rng.integers(0, nf, len(idx))
        signs = rng.choice([-1.0, 1.0], len(idx))
        for r, (f, sgn) in enumerate(zip(feats, signs)):
            s = float(sd[f])
            if kind == "spike":
                k = int(rng.integers(1, 4))
                t0 = int(rng.integers(0, w - k + 1))
                inject(kind, y[r, t0 : t0 + k, f], s, SPIKE_STD, sgn)
            elif kind == "level_shift":
                t0 = int(rng.integers(0, max(1, w - max(1, w // 3)) + 1))
                inject(kind, y[r, t0:, f], s, SHIFT_STD, sgn)
            elif kind == "noise_burst":
                t0 = int(rng.integers(0, w - w // 2 + 1))
                inject(kind, y[r, t0 : t0 + w // 2, f], s, BURST_FACTOR, rng=rng)
            elif kind == "stuck":
                col = y[r, :, f]
                first = col[np.isfinite(col)]
                inject(kind, col, value=first[0] if len(first) else np.nan)
            elif kind == "broken_correlation":
                other = int(rng.integers(0, m - 1))
                other += other >= idx[r]
                inject(kind, y[r, :, f], value=x[other, :, f])
            else:  # drift
                inject(kind, y[r, :, f], s, RAMP_STD, sgn)
        out[kind] = y.astype(np.float32)
    return out
