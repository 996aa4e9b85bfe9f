"""Faults a likelihood cannot see: dead and stuck sensors, judged on every window.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(1, 8, 2)).astype(np.float32)
>>> x[0, 4:, 1] = 5.0  # feature 1 sits at one value over the newest half
>>> SensorRules().check(x)
[('stuck_sensor', 1)]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def _reduce_window(op: np.ufunc, a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``op.reduce(a, axis=1)`` for (B, W, F) as a pairwise tree of whole-array ops: a
    reduction over the middle axis of a C-ordered array runs ~10x slower in NumPy."""
    while a.shape[1] > 1:
        n = a.shape[1]
        h = n // 2
        y = op(a[:, :h], a[:, h : 2 * h])
        if n % 2:
            y[:, :1] = op(y[:, :1], a[:, n - 1 :])
        a = y
    return a[:, 0]


class SensorRules:
    """Faults the likelihood cannot see, checked on every window before scoring.

    Both rules judge the newest half of the window (``h = max(2, W // 2)`` readings), so
    a fault is called as soon as it fills half a window and keeps being called for as long
    as it lasts: with W = 60 at one reading a second, a 60-second dead sensor flags 31
    consecutive windows, enough to open an episode; a whole-window rule flagged one.

    - ``dead_sensor``: one feature has no observed value in the newest half while the
      others do. The VAE leaves missing cells out of the likelihood (so a window with a
      dead sensor is still scored), which also means it never calls a dead sensor
      anomalous by itself.
    - ``stuck_sensor``: a feature repeats exactly one value over the newest half (at
      least ``max(2, h // 2)`` of it observed): real sensors always carry some noise.

    ``varies``: (F,) True for the features the stuck check applies to (a feature that
    was constant in training, or that some training window held at one value, may
    legitimately sit still: see ``VAEDetector.feature_varies``).
    """

    def __init__(self, dead: bool = True, stuck: bool = True, varies: npt.ArrayLike | None = None) -> None:
        self.dead = dead
        self.stuck = stuck
        self.varies = None if varies is None else np.asarray(varies, dtype=bool)

    @staticmethod
    def _recent(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        h = max(2, x.shape[1] // 2)
        r = x[:, -h:]
        return r, _reduce_window(np.add, (~np.isnan(r)).astype(np.int32))  # (B, F) observed cells

    @classmethod
    def stuck_cells(cls, x: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """(B, F) True where the feature sits at one exact value over the window's newest
        half (the stuck rule before ``varies``)."""
        r, n_obs = cls._recent(x)
        with np.errstate(invalid="ignore"):  # fmax/fmin skip NaN; an all-NaN column gives NaN, never 0
            span = _reduce_window(np.fmax, r) - _reduce_window(np.fmin, r)
        return np.asarray((span == 0) & (n_obs >= max(2, r.shape[1] // 2)))

    def check(self, x: npt.NDArray[np.float32]) -> list[tuple[str, int] | None]:
        """Per window (B, W, F): None, or (reason, feature index)."""
        out: list[tuple[str, int] | None] = [None] * len(x)
        if self.dead:
            _, n_obs = self._recent(x)
            dead = (n_obs == 0) & (n_obs.sum(axis=1, keepdims=True) > 0)
            for b, f in zip(*np.nonzero(dead)):
                if out[b] is None:
                    out[b] = ("dead_sensor", int(f))
        if self.stuck:
            stuck = self.stuck_cells(x)
            if self.varies is not None:
                stuck &= self.varies[None, :]
            for b, f in zip(*np.nonzero(stuck)):
                if out[b] is None:
                    out[b] = ("stuck_sensor", int(f))
        return out
