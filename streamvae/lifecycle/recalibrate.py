"""Which windows recalibrate the thresholds when a new model starts serving.

Two models' scores are not on one scale, so at a swap every threshold is recalibrated on
the NEW model's scores (``StreamPipeline.swap_model``). One rule, for the daemon's hot
swap and for ``streamvae replay --retrain`` alike:

- the new model's own held-out scores (the newest part of ITS training windows), and
- its scores of the most recent :data:`RECENT` windows the serving pipeline judged
  normal; while most of the fleet alarms together (a new operating point, see
  :mod:`streamvae.lifecycle.fleet`), of every window scored since that shift began, and
  none from before it.

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

Examples
--------
>>> from streamvae.core.pipeline import BatchResult
>>> from streamvae.core.windows import Window
>>> rec = RecalibrationWindows(size=3)
>>> normal = [Window("a", t, t, 0, np.full((2, 1), t, np.float32)) for t in range(5)]
>>> rec.observe(BatchResult(normal=normal), fleet_shift=False)
>>> rec.windows()[:, 0, 0].tolist()     # the newest three
[2.0, 3.0, 4.0]
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.core.pipeline import BatchResult, StreamPipeline
from streamvae.lifecycle.state import State, from_json, to_json

RECENT = 2_000  # recent normal windows the new model scores to recalibrate thresholds


class RecalibrationWindows:
    """The recent windows the next model will be recalibrated on (see the module doc)."""

    def __init__(self, size: int = RECENT) -> None:
        self.size = size
        self.recent_: deque[npt.NDArray[np.float32]] = deque(maxlen=size)
        self.fleet_shift_ = False

    def __len__(self) -> int:
        return len(self.recent_)

    def observe(self, result: BatchResult, fleet_shift: bool) -> None:
        """Keep a batch's windows: those judged normal; while a fleet-wide shift is on
        (``fleet_shift``, as it stands after this batch), every scored window, and none
        from before the shift."""
        if fleet_shift and result.windows is not None:
            if not self.fleet_shift_:
                self.recent_.clear()
            self.recent_.extend(result.windows)
        elif result.normal:
            self.recent_.extend(w.values for w in result.normal)
        self.fleet_shift_ = fleet_shift

    def windows(self) -> npt.NDArray[np.float32] | None:
        """(N, W, F): a snapshot of the windows kept, oldest first; None when there are none."""
        return np.stack(self.recent_) if self.recent_ else None

    def state(self) -> State:
        w = self.windows()
        return {"windows": np.empty((0, 0, 0), np.float32) if w is None else w,
                "meta": to_json({"fleet_shift": self.fleet_shift_})}

    def restore(self, state: State) -> None:
        self.recent_.clear()
        self.recent_.extend(state["windows"])
        self.fleet_shift_ = bool(from_json(state["meta"])["fleet_shift"])


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
