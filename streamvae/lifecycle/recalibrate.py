"""Which windows recalibrate the thresholds when a new model starts serving.

Two models' scores are not on one scale, so at a swap every threshold is recalibrated on
the NEW model's scores (``StreamPipeline.swap_model``). One rule, for the daemon's hot
swap and for ``streamvae replay --retrain`` alike:

- the new model's own held-out scores (the newest part of ITS training windows), and
- its scores of the most recent :data:`RECENT` windows the serving pipeline judged
  normal, and of one in :data:`STRIDE` of the :data:`OLDER` x ``STRIDE`` normal windows
  before them; while most of the fleet alarms together (a new operating point, see
  :mod:`streamvae.lifecycle.fleet`), of the windows scored since that shift began, the
  same way, and none from before it.

Why this rule. The thresholds will meet what the plant does next, and the recent windows
are the closest sample of it that every driver holds at the moment of the swap: a daemon
that swaps to a version another daemon's retrain promoted never saw that retrain's
buffer, and in the daemon the gate's held-out split (what replay recalibrated on before)
is a snapshot taken when the retrain started, minutes before the swap, inside a child
process. The new model has hardly trained on the recent windows: the buffer keeps 1
normal window in ``sample_every``, and the newest 20 % of what it keeps is held out of
training for the gate. The fleet-shift part: during a shift the stale model's "normal"
windows are the old operating point, which a model retrained on the new one scores
high, and the thresholds came out too high (drift test, offline: 14 of 20 faults caught
after the swap with the old point's windows, 20 of 20 with the new one's).

Why the older, thinned part. The newest windows alone are a snapshot: 2,000 windows are
250 s of the drift test's 8 pumps, less than one of its 600 s load cycles, and 4 s of a
fleet of 500 sensors at 1 Hz. A threshold recalibrated on the low part of a cycle flags
the high part. The drift test failed once in a way that fits this (1.05 false episodes
per entity-hour after the swap, bound 1.0: the fleet threshold 166.8-167.1 against a
p99.9 of 171.3 of the normal windows that came next, its recalibration windows' p99.9
167.0-167.7). One window in ten (the retrain buffer's ``sample_every``) of the 20,000
before the newest 2,000 spans 22,000 windows of the stream (2,750 s there, over four
load cycles) for twice the memory of the newest alone; neither number was tuned on any
data (tests/unit/lifecycle/test_recalibrate.py measures what they do on a cycling feed).

Examples
--------
>>> from streamvae.core.pipeline import BatchResult
>>> from streamvae.core.windows import Window
>>> rec = RecalibrationWindows(size=3, older=2, stride=2)
>>> normal = [Window("a", t, t, 0, np.full((2, 1), t, np.float32)) for t in range(10)]
>>> rec.observe(BatchResult(normal=normal), fleet_shift=False)
>>> rec.windows()[:, 0, 0].tolist()     # one in 2 of those before the newest three, then those
[4.0, 6.0, 7.0, 8.0, 9.0]
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.pipeline import BatchResult, StreamPipeline
from streamvae.lifecycle.state import State, from_json, to_json

RECENT = 2_000  # the newest normal windows the new model scores to recalibrate thresholds
OLDER = 2_000  # and this many of the older ones: one in STRIDE of those before the newest
STRIDE = 10


class RecalibrationWindows:
    """The recent windows the next model will be recalibrated on (see the module doc):
    the newest ``size``, and one in ``stride`` of those before them, at most ``older``."""

    def __init__(self, size: int = RECENT, older: int = OLDER, stride: int = STRIDE) -> None:
        self.size = size
        self.stride = stride
        self.recent_: deque[npt.NDArray[np.float32]] = deque(maxlen=size)
        self.older_: deque[npt.NDArray[np.float32]] = deque(maxlen=older)
        self.passed_ = 0  # windows that left the newest since the start (or the shift began)
        self.fleet_shift_ = False

    def __len__(self) -> int:
        return len(self.older_) + len(self.recent_)

    def observe(self, result: BatchResult, fleet_shift: bool) -> None:
        """Keep a batch's windows: those judged normal; while a fleet-wide shift is on
        (``fleet_shift``, as it stands after this batch), every scored window, and none
        from before the shift."""
        if fleet_shift and result.windows is not None:
            if not self.fleet_shift_:
                self.recent_.clear()
                self.older_.clear()
                self.passed_ = 0
            self._add(list(result.windows))
        elif result.normal:
            self._add([w.values for w in result.normal])
        self.fleet_shift_ = fleet_shift

    def _add(self, new: Sequence[npt.NDArray[np.float32]]) -> None:
        """Append ``new`` to the newest; of the windows that leave them, one in ``stride``
        (counted over the stream) goes to the older ones."""
        recent = self.recent_
        out = len(recent) + len(new) - self.size  # windows that leave the newest
        if out > 0 and self.older_.maxlen:
            leaving = list(islice(recent, min(out, len(recent)))) + list(new[: max(0, out - len(recent))])
            self.older_.extend(leaving[-self.passed_ % self.stride :: self.stride])
        self.passed_ += max(out, 0)
        recent.extend(new)

    def windows(self) -> npt.NDArray[np.float32] | None:
        """(N, W, F): a snapshot of the windows kept, oldest first; None when there are none."""
        return np.stack([*self.older_, *self.recent_]) if len(self) else None

    def state(self) -> State:
        w = self.windows()
        return {"windows": np.empty((0, 0, 0), np.float32) if w is None else w,
                "meta": to_json({"fleet_shift": self.fleet_shift_, "older": len(self.older_), "passed": self.passed_})}

    def restore(self, state: State) -> None:
        """The windows of :meth:`state`; a state saved before the older ones were kept
        holds the newest alone."""
        meta = from_json(state["meta"])
        n_old = int(meta.get("older", 0))
        windows = state["windows"]
        self.older_.clear()
        self.older_.extend(windows[:n_old])
        self.recent_.clear()
        self.recent_.extend(windows[n_old:])
        self.passed_ = int(meta.get("passed", 0))
        self.fleet_shift_ = bool(meta["fleet_shift"])


def recalibration_scores(det: Any, windows: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float64]:
    """The scores a new model's thresholds are recalibrated on: its held-out scores, then
    its scores of ``windows`` (:meth:`RecalibrationWindows.windows`)."""
    held = np.asarray(det.heldout_scores_, dtype=np.float64)
    if windows is None or len(windows) == 0:
        return held
    return np.concatenate([held, np.asarray(det.score_samples(windows), dtype=np.float64)])


def above_own(det: Any, scores: npt.NDArray[np.float64]) -> float:
    """The share of the recent windows' scores (``scores`` after the held-out ones, as
    :func:`recalibration_scores` gives them) above the model's own training threshold;
    NaN when it has none or there are no recent windows. Near 0 on a plant the model
    knows (0.0 % at 30 swaps of tests/integration/test_retrain_drift.py); well above it
    the model is behind the plant, and the thresholds recalibrated on those windows come
    out far from its own (a failure of that test: 222 against 188), so another retrain
    is due (:mod:`streamvae.lifecycle.behind`).

    >>> from types import SimpleNamespace
    >>> det = SimpleNamespace(heldout_scores_=[1.0, 2.0], threshold_=5.0)
    >>> above_own(det, np.array([1.0, 2.0, 4.0, 6.0, 7.0, 3.0]))
    0.5
    """
    own = getattr(det, "threshold_", None)
    recent = np.asarray(scores, dtype=np.float64)[len(det.heldout_scores_):]
    if own is None or len(recent) == 0:
        return float("nan")
    return float(np.mean(recent > own))


def install(pipeline: StreamPipeline, det: Any, version: str, scores: npt.ArrayLike) -> None:
    """Serve ``det`` from the next batch on, thresholds recalibrated on ``scores``; the
    sensor rules learn which features the new model saw vary. Raises (changing nothing)
    when the pipeline refuses the model."""
    pipeline.swap_model(det, version, scores)
    if pipeline.rules is not None:
        pipeline.rules.varies = det.feature_varies()
