"""Which buffered windows the next model learns.

Without a fleet-wide shift (see :mod:`streamvae.lifecycle.fleet`): every buffered window.
After one, the plant as it is NOW: nothing from the old operating point, and of the move
itself only the newest :func:`span` seconds. The choice depends on the windows' end
times and on a :class:`FleetHistory` alone, so a buffer rebuilt elsewhere (the retrain
job reading ``topics.samples``, where every normal sample carries the history) chooses
exactly as the daemon's own buffer does.

Examples
--------
>>> import numpy as np
>>> ts = np.arange(0.0, 100.0)
>>> x = ts.reshape(-1, 1, 1).astype(np.float32)
>>> h = FleetHistory(starts=(40.0,), ends=(70.0,))
>>> got, _ = training_windows(x, ["e"] * 100, ts, h, span=35.0, min_windows=5)
>>> got[:, 0, 0].min(), len(got)   # a shift 40-70: of the move only the newest 35 s, then the settled plant
(np.float32(64.0), 36)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

FLEET_STARTS = 16  # fleet-wide shifts remembered


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True, slots=True)
class FleetHistory:
    """What the training-window choice needs to know about fleet-wide shifts.

    ``starts`` / ``ends``: stream time each of the last :data:`FLEET_STARTS` shifts began
    and ended (NaN: still on), oldest first; ``rate``: windows the fleet scores per second
    of stream time (NaN: not known yet), which sets :func:`span` when ``shift_span`` is 0.
    """

    starts: tuple[float, ...] = ()
    ends: tuple[float, ...] = ()
    rate: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN becomes null."""
        return {"starts": [float(s) for s in self.starts], "ends": [None if e != e else float(e) for e in self.ends],
                "rate": None if self.rate != self.rate else float(self.rate)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FleetHistory":
        starts = [float(s) for s in d.get("starts") or ()]
        ends = [_num(e) for e in d.get("ends") or ()]
        ends = (ends + [math.nan] * len(starts))[: len(starts)]
        return cls(tuple(starts[-FLEET_STARTS:]), tuple(ends[-FLEET_STARTS:]), _num(d.get("rate")))


def span(history: FleetHistory, min_windows: int, sample_every: int, shift_span: float = 0.0) -> float:
    """Seconds of stream time a retrain after a fleet-wide shift learns: ``shift_span`` if
    set, else the stream time in which the fleet offers ``min_windows`` windows to
    1-in-``sample_every`` sampling, the span ``retrain.min_windows`` says is enough to
    learn the plant from (NaN while the rate is unknown).

    >>> span(FleetHistory(rate=4.0), min_windows=12, sample_every=10)
    30.0
    """
    if shift_span > 0:
        return float(shift_span)
    if not history.rate > 0:
        return math.nan
    return min_windows * sample_every / history.rate


def training_windows(x: npt.NDArray[np.float32], entities: Sequence[str], end_ts: npt.NDArray[np.float64],
                     history: FleetHistory, span: float,
                     min_windows: int = 200) -> tuple[npt.NDArray[np.float32], list[str]]:
    """The windows a retrain should learn, from a buffer snapshot in time order.

    No fleet-wide shift in ``history``: every window. After one:

    - no window from before the latest shift that began at least ``span`` seconds before
      the newest window (the old operating point), and
    - of the windows sampled while a shift was on (the plant moving away from what the
      serving model knew), only the newest ``span`` seconds.

    Windows after a shift ended (the plant settled, or a retrained model fits it) are all
    kept. The span should cover the plant's slowest regular cycle. Measured offline on the
    drift test's plant (a 10-minute load cycle, the load ramped 25% over 15 minutes),
    model warm-started mid-ramp, faults caught after the plant settled: trained on the
    whole ramp 14/20, on the newest 2 minutes of it 2/20, on the newest 10 minutes
    19-20/20. Fewer than ``min_windows`` windows so chosen: the newest ``min_windows``
    since the earliest remembered shift; fewer than that: every window.
    """
    ents = list(entities)
    if not history.starts or len(end_ts) == 0:
        return x, ents
    cut = float(end_ts[-1]) - span if span == span else -math.inf
    older = [t for t in history.starts if t <= cut]
    keep = end_ts >= (older[-1] if older else history.starts[0])
    for start, end in zip(history.starts, history.ends):
        keep &= ~((end_ts >= start) & (end_ts < cut) & ~(end_ts > end))  # NaN end (still on): no upper bound
    idx = np.flatnonzero(keep)
    if len(idx) < min_windows:
        idx = np.flatnonzero(end_ts >= history.starts[0])[-min_windows:]
        if len(idx) < min_windows:
            return x, ents
    return x[idx], [ents[i] for i in idx]
