"""Whether a model that has just swapped in is behind the plant.

A retrain learns windows at least ``retrain.margin`` old, and takes minutes more, so
what it learned lags the plant. When the plant moved meanwhile (the rest of a new
operating point's load cycle, the end of a ramp), the recent windows score above
anything the model saw, and the thresholds recalibrated on them come out high: they hide
faults. Nor does drift fire again, as its reference is taken from the same recent plant.
So :class:`~streamvae.lifecycle.trigger.RetrainTrigger` retrains once more while
:class:`BehindPlant` holds a reason (``reason_``), until a model that is not behind swaps in.

A model is behind when, above its own training threshold (its held-out scores' 99.9th
percentile plus a margin), it scored more than ``share`` of

- the recent windows at its swap (:func:`streamvae.lifecycle.recalibrate.above_own`), or
- ``share x watch`` of its first ``watch`` scored windows: the recent windows may not
  hold all of where the plant went (a few minutes of a load cycle at a new operating
  point). It is marked as soon as the count passes, not at the end of the watch.

Examples
--------
>>> b = BehindPlant(retry_windows=50)
>>> b.swapped(above_own=0.04, own=180.0, watch=0); b.reason_
'behind the plant: its own threshold let through 4.0% of the recent windows'
>>> b.swapped(above_own=0.0, own=180.0, watch=100); b.reason_ is None, b.watching
(True, True)
>>> b.observe([190.0, 190.0]); b.reason_
'behind the plant: its own threshold let through 2 of the first 2 windows it scored'
"""

from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np

from streamvae.lifecycle.state import State, from_json, to_json

log = logging.getLogger(__name__)

# A model that knows the plant scores ~0 % of the recent windows above its own training
# threshold: 0.0 % at each of 30 swaps in 6 passing runs of
# tests/integration/test_retrain_drift.py. 1 % is ten times the 0.1 % that its 99.9th
# percentile lets through.
BEHIND_SHARE = 0.01
_FIELDS = ("reason_", "own_", "watch_n_", "watch_seen_", "watch_above_")


class BehindPlant:
    """The serving model's "behind the plant" mark (see the module doc).

    ``retry_windows``: the buffered windows the trigger waits for before the next retrain
    (for the log line only)."""

    def __init__(self, share: float = BEHIND_SHARE, retry_windows: int = 50) -> None:
        self.share = share
        self.retry_windows = retry_windows
        self.reason_: str | None = None
        self.own_: float | None = None  # the model's own training threshold, while its first windows are watched
        self.watch_n_ = 0  # how many of its first scored windows are watched
        self.watch_seen_ = 0
        self.watch_above_ = 0

    @property
    def watching(self) -> bool:
        return self.own_ is not None

    def swapped(self, above_own: float, own: float | None, watch: int) -> None:
        """A new model serves: ``above_own`` (NaN: not known) decides now; with ``own``, its
        first ``watch`` windows are watched (:meth:`observe`)."""
        self.reason_ = None
        self.own_, self.watch_n_, self.watch_seen_, self.watch_above_ = None, watch, 0, 0
        if above_own > self.share:  # False for NaN
            self._mark(f"behind the plant: its own threshold let through {100 * above_own:.1f}% of the recent windows")
        elif own is not None and watch > 0 and math.isfinite(own):
            self.own_ = float(own)

    def observe(self, scores: Iterable[float]) -> None:
        """Scores of every window the new model scored (flagged or not), while :attr:`watching`."""
        if self.own_ is None:
            return
        a = np.asarray(list(scores), dtype=np.float64)[: self.watch_n_ - self.watch_seen_]
        self.watch_seen_ += len(a)
        self.watch_above_ += int(np.count_nonzero(a > self.own_))
        if self.watch_above_ > self.share * self.watch_n_:
            self._mark(f"behind the plant: its own threshold let through {self.watch_above_} of the first "
                       f"{self.watch_seen_} windows it scored")
            self.own_ = None
        elif self.watch_seen_ >= self.watch_n_:
            self.own_ = None

    def _mark(self, reason: str) -> None:
        self.reason_ = reason
        log.warning("the new model is %s (at most %.1f%% of the windows should be above its own training "
                    "threshold); another retrain is due once retrain.min_interval has passed and %d "
                    "windows are buffered since the last retrain started", reason, 100 * self.share,
                    self.retry_windows)

    def state(self) -> State:
        return {"meta": to_json({k: getattr(self, k) for k in _FIELDS})}

    def restore(self, state: State) -> None:
        for k, v in from_json(state["meta"]).items():
            if k in _FIELDS:
                setattr(self, k, v)
