"""Peaks over threshold: SPOT and its drift-aware DSPOT (Siffer et al., KDD 2017), the
trackers of the ``spot`` and ``dspot`` threshold kinds (the contract: streamvae/core/thresholds.py).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = SPOT(q=1e-3).warm_start(rng.exponential(size=5000))
>>> round(t.get(), 1)   # exponential tail; the exact value is -log(1e-3) = 6.9
7.2
>>> t.update(0.5)[1], t.update(50.0)[1]   # (threshold, flagged)
(False, True)
"""

from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections import deque
from typing import Any, Iterable

import numpy as np

from streamvae.config import DEPTH, MIN_PEAKS
from streamvae.core.thresholds import _NOT_READY, Decision, _check, _check_spot, _finite
from streamvae.errors import NotCalibratedError

_add_reduce = np.add.reduce


@functools.lru_cache(maxsize=64)
def _ranks(k: int) -> np.ndarray:
    """1..k as floats (read-only, cached: k takes few distinct values, mostly max_peaks)."""
    r = np.arange(1.0, k + 1.0)
    r.flags.writeable = False
    return r


def gpd_pwm(excesses: np.ndarray, fill: float = 0.0, m: int = 0) -> tuple[float, float]:
    """Generalised Pareto (shape gamma, scale sigma) by probability-weighted moments
    (Hosking & Wallis 1987) from excesses sorted ascending, plus ``m`` more equal to
    ``fill`` (>= the largest) on top; valid for gamma < 1, so heavy tails are fine.

    With plotting positions p_i = (i - 0.35) / K over the K = k + m values, the moments
    need only the sum and the rank-weighted sum of the k excesses (two O(k) NumPy calls);
    the ``fill`` block is added in closed form, so censored fills cost no array.
    """
    k = len(excesses)
    n = k + m
    s0 = float(_add_reduce(excesses))
    s1 = float(_ranks(k).dot(excesses)) if k else 0.0
    a0 = (s0 + m * fill) / n
    # sum_i (1 - p_i) x_(i): the k excesses, then the fill at ranks k+1..K
    top_ranks = (n * (n + 1) - k * (k + 1)) / 2.0
    a1 = (s0 - (s1 - 0.35 * s0) / n + fill * (m - (top_ranks - 0.35 * m) / n)) / n
    denom = a0 - 2.0 * a1
    if not denom > 1e-12 * max(a0, 1e-300):
        return 0.0, max(a0, 1e-12)  # degenerate sample: exponential tail
    gamma = 2.0 - a0 / denom
    sigma = 2.0 * a0 * a1 / denom
    gamma = min(max(gamma, -0.5), 0.95)
    return gamma, max(sigma, 1e-12)


class SPOT:
    """Streaming Peaks-Over-Threshold (Siffer et al., KDD 2017).

    Calibration: ``t`` = the ``level``-quantile of the warm-start scores; the excesses
    over ``t`` (the peaks) get a generalised Pareto fit; the threshold ``z`` is the
    score whose tail probability is ``q``:
    ``z = t + sigma/gamma * ((q n / N_t)^(-gamma) - 1)``.

    Stream: a score above ``z`` is flagged and ignored; a score in (t, z] is a new peak:
    the tail is refitted and ``z`` recomputed; anything else only counts. The peaks kept
    are the last ``max_peaks`` (their arrival order, and a sorted array of doubles
    updated by one bisect insert or delete), so one refit is O(max_peaks); it happens
    after every new peak while there are few and after every k/64 new peaks once there
    are k, so the amortised cost per update stays bounded and small
    (scripts/bench_thresholds.py).
    """

    kind = "spot"

    def __init__(self, q: float = 1e-3, level: float = 0.98, max_peaks: int = 1000, min_peaks: int = MIN_PEAKS) -> None:
        _check_spot(self.kind, q, level, max_peaks, min_peaks)
        self.q = q
        self.level = level
        self.max_peaks = max_peaks
        self.min_peaks = min_peaks
        self.t_: float | None = None
        self.z_: float | None = None
        self.n_ = 0.0  # unflagged observations the kept peaks stand for
        self.w_ = 0.0  # of those, warm-start ones (their exceedances of z are among the peaks)
        self.gamma_ = 0.0
        self.sigma_ = 0.0
        self._order: deque[float] = deque()
        self._since_fit = 0
        # the same peaks sorted ascending, as C doubles (8 bytes a peak): a bisect insert
        # or delete is one memmove, and the fit reads it as a NumPy array without a copy
        self._sorted = array("d")
        self._cache()

    def _set_peaks(self, peaks: np.ndarray) -> None:
        self._order = deque(peaks.tolist())
        self._sorted = array("d", np.sort(peaks).tolist())

    def warm_start(self, scores: Iterable[float]) -> "SPOT":
        s = _finite(scores)
        if len(s) < self.min_peaks / (1.0 - self.level):
            # too few scores for `level`: lower the initial threshold so at least
            # min_peaks excesses exist (a small warm-start sample still calibrates).
            level = max(0.5, 1.0 - self.min_peaks / max(len(s), 1))
        else:
            level = self.level
        if len(s) < self.min_peaks + 1:
            raise NotCalibratedError(f"SPOT needs at least {self.min_peaks + 1} warm-start scores; got {len(s)}")
        self.t_ = float(np.quantile(s, level))
        peaks = s[s > self.t_] - self.t_
        self.n_ = self.w_ = float(len(s))
        self.z_ = None
        self._since_fit = 0
        self._set_peaks(peaks)
        while len(self._order) > self.max_peaks:
            self._drop_oldest()
        self._fit()
        return self

    def _drop_oldest(self) -> None:
        old = self._order.popleft()
        s = self._sorted
        del s[bisect.bisect_left(s, old)]
        # the dropped peak stood for n/N_t observations (w/N_t of them from the warm start)
        k = len(s) + 1
        self.n_ -= self.n_ / k
        self.w_ -= self.w_ / k

    def _fit(self) -> None:
        assert self.t_ is not None
        s = self._sorted
        k = len(s)
        if k < self.min_peaks:
            self.z_ = s[-1] + self.t_ if k else self.t_
            self._cache()
            return
        # Exceedances of z were flagged and never entered as peaks: the tail sample is
        # cut at z, and a fit on it is too light, z drops, more is cut... (measured: 4.5x
        # the target rate on 200k Pareto scores). Put back the nominal number of
        # exceedances among the unflagged stream observations, q * (n - w), as censored
        # peaks at their expected excess under the current fit. The count is the model's,
        # not the number actually flagged: a flagged score changes no state at all, so a
        # long anomaly cannot lift the threshold (warm-start exceedances are real peaks).
        c = self.q * (self.n_ - self.w_)
        n = self.n_
        m = 0
        if c >= 0.5 and self.z_ is not None and self.gamma_ < 1.0:
            u = self.z_ - self.t_
            fill = u + max(self.sigma_ + self.gamma_ * u, 0.0) / (1.0 - self.gamma_)
            m = int(round(c))
            n += m
        view = np.frombuffer(s)  # no copy; it must not outlive this call (s cannot grow while viewed)
        self.gamma_, self.sigma_ = gpd_pwm(view, max(fill, s[-1]) if m else 0.0, m)
        del view
        r = self.q * n / (k + m)
        if abs(self.gamma_) < 1e-6:
            self.z_ = self.t_ - self.sigma_ * math.log(r)
        else:
            self.z_ = self.t_ + self.sigma_ / self.gamma_ * (r ** (-self.gamma_) - 1.0)
        self._cache()

    def _cache(self) -> None:
        z, t = self.z_, self.t_
        self._zf = math.inf if z is None else z
        self._tf = math.inf if t is None else t
        # below both t and z: an ordinary score (NaN before calibration: no score is)
        self._lo = math.nan if z is None or t is None else min(t, z)
        self._keep = (z, False)
        self._flag = (z, True)

    def get(self) -> float | None:
        return self.z_

    def update(self, score: float) -> Decision:
        # Hot path (about 98% of updates: below t and z): one comparison, one counter, a
        # cached Decision, no allocation. Cost per update: scripts/bench_thresholds.py.
        if score <= self._lo:
            self.n_ += 1.0
            return self._keep
        if score > self._zf:
            return self._flag  # flagged: learned from in no way, not even counted
        keep = self._keep  # decided against the threshold in force before this score
        if score > self._tf:
            self._add_peak(score - self._tf)
        elif score != score or self.z_ is None:  # NaN, or not calibrated
            return keep
        self.n_ += 1.0
        return keep

    def _add_peak(self, e: float) -> None:
        # a bisect insert into a sorted array of at most max_peaks doubles: one memmove
        # in C, several times cheaper than the same search and shift with NumPy calls
        # (~1 us each here); NumPy only comes in for the fit itself
        self._order.append(e)
        s = self._sorted
        s.insert(bisect.bisect_right(s, e), e)
        if len(self._order) > self.max_peaks:
            self._drop_oldest()
        self._maybe_fit()

    def _maybe_fit(self) -> None:
        """Refit after every new peak while there are few, then after every k/64 new
        peaks (k kept): one fit is O(k), so the amortised cost per update stays flat as
        the peak store fills; one new peak among hundreds barely moves the tail anyway."""
        self._since_fit += 1
        if self._since_fit >= max(1, len(self._sorted) >> 6):
            self._since_fit = 0
            self._fit()

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "q": self.q, "level": self.level, "max_peaks": self.max_peaks, "min_peaks": self.min_peaks,
            "t": self.t_, "n": self.n_, "w": self.w_, "z": self.z_, "gamma": self.gamma_, "sigma": self.sigma_,
            "peaks": list(self._order), "since_fit": self._since_fit,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "SPOT":
        t = cls(d["q"], d["level"], d["max_peaks"], d["min_peaks"])
        t.t_ = d["t"]
        t.n_, t.w_, t.z_, t.gamma_, t.sigma_ = d["n"], d["w"], d["z"], d["gamma"], d["sigma"]
        t._set_peaks(np.asarray(d["peaks"], dtype=np.float64))
        t._since_fit = d.get("since_fit", 0)
        t._cache()
        return t


class DSPOT:
    """SPOT on the deviation from a moving average of the last ``depth`` normal scores.

    A slowly drifting score level moves the average with it, so drift does not become a
    storm of alarms; a jump above the recent level still does. The threshold reported
    is in score units (moving average + the SPOT threshold on deviations).

    The average moves after every normal score (Siffer et al.'s definition): a ring of the
    last ``depth`` normal scores and the running mean, ``m += (new - oldest) / depth``,
    recomputed exactly (``math.fsum``) every ~1,000 scores and on save, so rounding
    cannot build up. An ordinary score (deviation at or below SPOT's
    ``min(t, z)``: ~98% of them) costs one ring append, one multiply-add and one tuple;
    SPOT itself only sees the rest (scripts/bench_thresholds.py).
    """

    kind = "dspot"

    def __init__(self, q: float = 1e-3, depth: int = 50, level: float = 0.98, max_peaks: int = 1000,
                 min_peaks: int = MIN_PEAKS) -> None:
        _check_spot(self.kind, q, level, max_peaks, min_peaks)
        _check(self.kind, "depth", DEPTH, depth)
        self.depth = depth
        self.spot = SPOT(q, level, max_peaks, min_peaks)
        self._ring: deque[float] = deque(maxlen=depth)  # the last `depth` normal scores
        self._inv = 1.0 / depth
        self._m = math.nan  # the average in force (NaN until the ring is full)
        self._pend = 0  # hot-path scores SPOT has not counted yet (added before any SPOT call)
        self._since_sum = 0  # incremental average updates since the last exact re-sum
        self._cache()

    @property
    def q(self) -> float:
        return self.spot.q

    def _cache(self) -> None:
        """SPOT's current bounds on deviations (NaN / inf while not ready: no hot path)."""
        spot = self.spot
        ready = len(self._ring) == self.depth and spot.z_ is not None
        self._slo = spot._lo if ready else math.nan
        self._szf = spot._zf

    def _flush(self, exact: bool = False) -> None:
        """Bring SPOT's count up to date; re-sum the average exactly when asked or after
        many incremental steps (each adds at most half an ulp of rounding)."""
        pend = self._pend
        self.spot.n_ += pend
        self._pend = 0
        self._since_sum += pend
        if (exact or self._since_sum >= 1024) and len(self._ring) == self.depth:
            self._m = math.fsum(self._ring) / self.depth
            self._since_sum = 0

    def warm_start(self, scores: Iterable[float]) -> "DSPOT":
        s = _finite(scores)
        d = self.depth
        if len(s) < d + self.spot.min_peaks + 1:
            raise NotCalibratedError(f"DSPOT needs at least {d + self.spot.min_peaks + 1} warm-start scores (depth {d}); got {len(s)}")
        c = np.concatenate([[0.0], np.cumsum(s)])
        means = (c[d:-1] - c[: len(s) - d]) / d  # mean of the d scores before each one
        self.spot.warm_start(s[d:] - means)
        self._ring = deque(s[-d:].tolist(), maxlen=d)
        self._pend = 0
        self._flush(exact=True)
        self._cache()
        return self

    def get(self) -> float | None:
        z = self.spot.get()
        if z is None or len(self._ring) < self.depth:
            return None
        return self._m + z

    def update(self, score: float) -> Decision:
        m = self._m  # the average in force for this score
        if score - m <= self._slo:
            # Hot path: SPOT would only count this deviation; learn the score.
            ring = self._ring
            self._m = m + (score - ring[0]) * self._inv
            ring.append(score)  # maxlen: drops ring[0]
            self._pend += 1
            return m + self._szf, False
        if len(self._ring) < self.depth or self.spot.z_ is None:
            return _NOT_READY
        self._flush()  # SPOT's n must be exact before it may refit
        m = self._m
        z, flagged = self.spot.update(score - m)
        if z is None:
            return _NOT_READY
        if not flagged and score == score:  # SPOT counted this one itself
            ring = self._ring
            self._m = m + (score - ring[0]) * self._inv
            ring.append(score)
        self._cache()  # a new peak may have moved t and z
        return m + z, flagged

    def to_state(self) -> dict[str, Any]:
        self._flush(exact=True)  # the restored copy re-sums too: both continue alike
        return {"kind": self.kind, "depth": self.depth, "ring": list(self._ring), "spot": self.spot.to_state()}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "DSPOT":
        s = d["spot"]
        t = cls(s["q"], d["depth"], s["level"], s["max_peaks"], s["min_peaks"])
        t.spot = SPOT.from_state(s)
        t._ring = deque((float(x) for x in d["ring"]), maxlen=t.depth)
        t._flush(exact=True)
        t._cache()
        return t
