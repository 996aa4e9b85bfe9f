"""Adaptive thresholds over a stream of anomaly scores (higher score = more anomalous).

Every tracker has the same small contract:

- ``warm_start(scores)``: calibrate from a sample of normal scores (the held-out
  training windows' scores);
- ``update(score) -> (threshold, flagged)``: the threshold in force and whether
  ``score`` is above it; the tracker learns from the score only when it is NOT flagged, so an anomaly
  never drags the threshold up after itself;
- ``get()``: the current threshold, or ``None`` while not calibrated (the caller then
  uses a fallback, never 0);
- ``to_state()`` / ``threshold_from_state(d)``: a JSON-able dict, so a restart does not
  forget what was learned.

Kinds: ``quantile`` (streaming P-square quantile over all history, or exact over a
sliding window), ``spot`` and ``dspot`` (peaks over threshold with a generalised Pareto
tail, Siffer et al., KDD 2017), ``fixed``.

This module holds the contract and the two simple kinds; ``spot`` and ``dspot`` are in
streamvae/core/spot.py, and streamvae/core/trackers.py builds any kind by name.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any, Iterable, Protocol

import numpy as np

from streamvae.config import FINITE, LEVEL, QUANTILE, RISK
from streamvae.errors import Rule, check, interval


# The threshold in force for one score (None: not calibrated) and the verdict, as a plain
# tuple: ``thr, flagged = tracker.update(score)``. Not a NamedTuple: building one costs
# ~100 ns more than a tuple here, as much as the rest of a DSPOT update
# (scripts/bench_thresholds.py), and every scored window makes one.
Decision = tuple[float | None, bool]
_NOT_READY: Decision = (None, False)


class Threshold(Protocol):
    kind: str

    def warm_start(self, scores: Iterable[float]) -> "Threshold": ...

    def get(self) -> float | None: ...

    def update(self, score: float) -> Decision: ...

    def to_state(self) -> dict[str, Any]: ...


def _finite(scores: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=np.float64)
    return a[np.isfinite(a)]


def _check(kind: str, key: str, rule: Rule, value: Any) -> None:
    """A tracker parameter, checked by the rule and in the words of a config file (config.py)."""
    check(f"threshold.{key}", rule, value, f'kind = "{kind}"')


_WINDOW = interval(10, integer=True).or_unset()
_MIN_SAMPLES = interval(5, integer=True)
_MAX_PEAKS = interval(20, integer=True)


def _check_spot(kind: str, q: float, level: float, max_peaks: int, min_peaks: int) -> None:
    _check(kind, "q", RISK, q)
    _check(kind, "level", LEVEL, level)
    _check(kind, "max_peaks", _MAX_PEAKS, max_peaks)
    _check(kind, "min_peaks", interval(3, max_peaks, integer=True), min_peaks)


# ---------------------------------------------------------------------------------------
class FixedThreshold:
    """A constant threshold. ``value=None`` until :meth:`warm_start` is given one."""

    kind = "fixed"

    def __init__(self, value: float | None = None) -> None:
        self.value = value

    @property
    def value(self) -> float | None:
        return self._value

    @value.setter
    def value(self, value: float | None) -> None:
        _check("fixed", "value", FINITE.or_unset(), value)
        self._value = value
        self._v = math.inf if value is None else value  # no threshold: nothing is above it
        self._keep = (value, False)
        self._flag = (value, True)

    def warm_start(self, scores: Iterable[float]) -> "FixedThreshold":
        return self

    def get(self) -> float | None:
        return self._value

    def update(self, score: float) -> Decision:
        return self._flag if score > self._v else self._keep

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "FixedThreshold":
        return cls(d["value"])


# ---------------------------------------------------------------------------------------
class QuantileThreshold:
    """The ``q``-quantile of the score stream, learned from unflagged scores.

    ``window=None``: over all history, with the P-square algorithm (Jain & Chlamtac
    1985; five markers, O(1) per update and O(1) memory). ``window=N``: exact, over the
    last N observations (a sorted list: O(log N) search + one memmove per update).
    ``min_samples``: scores needed before the tracker answers (``get()`` is None before).

    A flagged score's value is never learned; it counts as one observation censored at
    the threshold (see ``update``).
    """

    kind = "quantile"

    def __init__(self, q: float = 0.995, window: int | None = None, min_samples: int = 100) -> None:
        _check(self.kind, "q", QUANTILE, q)
        _check(self.kind, "window", _WINDOW, window)
        _check(self.kind, "min_samples", _MIN_SAMPLES, min_samples)
        self.q = q
        self.window = window
        self.min_samples = min_samples
        self.n_ = 0
        # sliding window state
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        # P-square state: marker heights, positions, desired positions
        self._h: list[float] = []
        self._pos = [0.0, 1.0, 2.0, 3.0, 4.0]
        self._want = [0.0, 2 * q, 4 * q, 2 + 2 * q, 4.0]
        self._inc = [0.0, q / 2, q, (1 + q) / 2, 1.0]

    def warm_start(self, scores: Iterable[float]) -> "QuantileThreshold":
        for s in _finite(scores):
            self._learn(float(s))
        return self

    def get(self) -> float | None:
        if self.n_ < self.min_samples:
            return None
        if self.window is not None:
            s = self._sorted
            return s[min(len(s) - 1, int(self.q * len(s)))]
        return self._h[2]

    def update(self, score: float) -> Decision:
        thr = self.get()
        flagged = thr is not None and score > thr
        if not flagged:
            if math.isfinite(score):
                self._learn(score)
        else:
            # Censored at the threshold: a flagged score counts as one observation AT the
            # threshold, its value never used. Below the threshold the sample's CDF stays
            # exact (every score there was seen), so the quantile is estimated without
            # bias whenever it lies below; without this the tracker only ever saw scores
            # below itself and ratcheted down (measured: 27% of a stationary stream flagged
            # after 100k scores at q=0.99 with a window). A long anomaly fills the sample
            # with censored observations, which holds the threshold where it was: it can
            # neither lift it (its values are never seen) nor drag it down.
            self._learn(thr)  # type: ignore[arg-type]
        return thr, flagged

    def _learn(self, x: float) -> None:
        self.n_ += 1
        if self.window is not None:
            self._fifo.append(x)
            bisect.insort(self._sorted, x)
            if len(self._fifo) > self.window:
                old = self._fifo.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            return
        h = self._h
        if len(h) < 5:
            bisect.insort(h, x)
            return
        if x < h[0]:
            h[0] = x
            k = 0
        elif x >= h[4]:
            h[4] = x
            k = 3
        else:
            k = bisect.bisect_right(h, x) - 1
            k = min(max(k, 0), 3)
        pos, want, inc = self._pos, self._want, self._inc
        for i in range(k + 1, 5):
            pos[i] += 1
        for i in range(5):
            want[i] += inc[i]
        for i in (1, 2, 3):
            d = want[i] - pos[i]
            if (d >= 1 and pos[i + 1] - pos[i] > 1) or (d <= -1 and pos[i - 1] - pos[i] < -1):
                s = 1 if d > 0 else -1
                hp = h[i] + s / (pos[i + 1] - pos[i - 1]) * (
                    (pos[i] - pos[i - 1] + s) * (h[i + 1] - h[i]) / (pos[i + 1] - pos[i])
                    + (pos[i + 1] - pos[i] - s) * (h[i] - h[i - 1]) / (pos[i] - pos[i - 1])
                )
                if not h[i - 1] < hp < h[i + 1]:  # parabolic step leaves the bracket: go linear
                    hp = h[i] + s * (h[i + s] - h[i]) / (pos[i + s] - pos[i])
                h[i] = hp
                pos[i] += s

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "q": self.q, "window": self.window, "min_samples": self.min_samples, "n": self.n_,
            "fifo": list(self._fifo), "h": list(self._h), "pos": list(self._pos), "want": list(self._want),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "QuantileThreshold":
        t = cls(d["q"], d["window"], d["min_samples"])
        t.n_ = d["n"]
        t._fifo = deque(d["fifo"])  # state saved with "cens" / "censored" (never read) loads too
        t._sorted = sorted(d["fifo"])
        t._h, t._pos, t._want = list(d["h"]), list(d["pos"]), list(d["want"])
        return t


# ---------------------------------------------------------------------------------------
