"""Per-feature standardisation fitted on training readings; missing stays missing.

Examples
--------
>>> import numpy as np
>>> s = Scaler().fit(np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, 5.0]]))
>>> s.mean_.tolist(), s.scale_.tolist()
([2.0, 5.0], [1.0, 0.05])
>>> s.transform(np.array([[np.nan, 5.5]])).round(3).tolist()
[[nan, 10.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError, NotFittedError

_F32_MAX = float(np.finfo(np.float32).max)


def standardise(x: npt.ArrayLike, mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """``(x - mean) / scale`` in float64, clipped to float32's range, as float32: NaN stays
    NaN, and a value whose scaled form a float32 cannot hold becomes the largest one that
    it can, never infinity (which the model would not take for an extreme reading). The
    one formula :meth:`Scaler.transform` and the fused scorer's NumPy pass both use (its
    C pass, model/_tail.c, computes the same)."""
    a = np.asarray(x, dtype=np.float64)
    return np.clip((a - mean) / scale, -_F32_MAX, _F32_MAX).astype(np.float32)


@dataclass
class Scaler:
    """z = (x - mean) / scale, per feature, ignoring NaN when fitting.

    A constant (or nearly constant) feature would get scale 0 and turn any later change
    into an infinite z-score. The scale is therefore floored at
    ``rel_floor * max(|mean|, 1)`` (and at ``abs_floor``): a change of one percent of
    the feature's level reads as one standard deviation, never as infinity.
    """

    rel_floor: float = 0.01
    abs_floor: float = 1e-6
    mean_: npt.NDArray[np.float64] = field(default=None, repr=False)  # type: ignore[arg-type]
    scale_: npt.NDArray[np.float64] = field(default=None, repr=False)  # type: ignore[arg-type]

    def fit(self, x: npt.ArrayLike) -> "Scaler":
        """Fit on readings (N, F) or windows (..., F); NaN cells are ignored."""
        a = np.asarray(x, dtype=np.float64)
        a = a.reshape(-1, a.shape[-1])
        observed = ~np.isnan(a)
        empty = np.nonzero(observed.sum(axis=0) == 0)[0]
        if len(empty):
            raise DataError(f"cannot fit the scaler: feature(s) {empty.tolist()} have no observed value")
        mean = np.nanmean(a, axis=0)
        std = np.nanstd(a, axis=0)
        floor = np.maximum(self.rel_floor * np.maximum(np.abs(mean), 1.0), self.abs_floor)
        self.mean_ = mean
        self.scale_ = np.maximum(std, floor)
        return self

    def _check(self) -> None:
        if self.mean_ is None:
            raise NotFittedError("this Scaler is not fitted; call fit() with training readings")

    def transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Scale the last axis (:func:`standardise`)."""
        self._check()
        return standardise(x, self.mean_, self.scale_)

    def inverse_transform(self, z: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Undo :meth:`transform`."""
        self._check()
        a = np.asarray(z, dtype=np.float64)
        return (a * self.scale_ + self.mean_).astype(np.float32)

    def to_arrays(self) -> dict[str, npt.NDArray[np.float64]]:
        """The learned state, for the artifact."""
        self._check()
        return {"mean": self.mean_, "scale": self.scale_}

    @classmethod
    def from_arrays(cls, mean: npt.ArrayLike, scale: npt.ArrayLike) -> "Scaler":
        s = cls()
        s.mean_ = np.asarray(mean, dtype=np.float64)
        s.scale_ = np.asarray(scale, dtype=np.float64)
        return s
