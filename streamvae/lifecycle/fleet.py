"""Fleet-wide shift detection: most of the fleet alarming at once is a new operating
point (a new season, a new product, a re-tuned line), not a fault.

A fault hits one machine. When at least ``share`` of the live fleet (``min_entities``
or more, each scored within the last ``horizon`` seconds) is inside alert episodes at
once, :class:`FleetShift` says a shift is on; the normal buffer then samples every
entity's windows, flagged or not, so the next model learns the new point instead of
only the windows the stale model still calls normal (measured: a plant moved 25% in
load left the buffer with no window of its new normal, and every retrain relearnt the
old one). It remembers when each of the last shifts began and ended, and how fast the
fleet scores windows, for the choice of training windows
(:class:`~streamvae.lifecycle.learn.FleetHistory`).

Examples
--------
>>> from types import SimpleNamespace as Alert
>>> from streamvae.core.pipeline import BatchResult, ScoredWindow
>>> fleet = FleetShift(share=0.5, min_entities=2)
>>> def batch(t, kind):
...     s = [ScoredWindow(e, t, t, 0, 1.0, 2.0, kind == "open", None) for e in ("a", "b")]
...     alerts = [Alert(kind=kind, entity=e) for e in ("a", "b")]
...     return BatchResult(scored=s, alerts=alerts, windows=np.zeros((2, 1, 1), np.float32))
>>> fleet.update(batch(10.0, "open")), fleet.history().starts
(True, (10.0,))
>>> fleet.update(batch(20.0, "close")), fleet.history().ends
(False, (20.0,))
"""

from __future__ import annotations

import math
import numpy as np

from streamvae.core.pipeline import BatchResult
from streamvae.lifecycle.learn import FLEET_STARTS, FleetHistory
from streamvae.lifecycle.state import State, from_json, to_json


class FleetShift:
    """Is most of the fleet alarming together (see the module doc)?

    Parameters
    ----------
    share : the share of the live fleet inside episodes that means a shift (0: off).
    min_entities : fewer live entities than this: never a shift.
    horizon : seconds; an entity is live when its latest window ended within this of the
        fleet's latest (``max(retrain.margin, 60)`` in the normal buffer).
    """

    def __init__(self, share: float = 0.5, min_entities: int = 4, horizon: float = 300.0) -> None:
        self.share = float(share)
        self.min_entities = min_entities
        self.horizon = float(horizon)
        self.on_ = False
        self.starts_: list[float] = []  # when each of the last FLEET_STARTS shifts began, oldest first
        self.ends_: list[float] = []  # ... and ended (NaN: still on), aligned with starts_
        self.alarmed_: set[str] = set()  # entities inside an open episode
        self._last_ts: dict[str, float] = {}  # entity -> latest scored window end
        self.scored_ = np.array([0.0, np.nan, np.nan])  # windows scored, first and latest end_ts: the fleet's rate

    def update(self, result: BatchResult) -> bool:
        """Take one batch; True when its windows belong to a shift."""
        for a in result.alerts:
            if a.kind == "open":
                self.alarmed_.add(a.entity)
            elif a.kind == "close":
                self.alarmed_.discard(a.entity)
        now: dict[str, float] = {}
        first = math.inf  # the batch's earliest window end: where a shift begins or ends
        for s in result.scored:
            if s.end_ts > now.get(s.entity, -math.inf):
                now[s.entity] = s.end_ts
            first = min(first, float(s.end_ts))
        self._last_ts.update(now)
        if now:
            n, t0, t1 = self.scored_
            self.scored_ = np.array([n + len(result.scored), np.fmin(t0, first), np.fmax(t1, max(now.values()))])
        if self.share <= 0 or result.windows is None or not self._last_ts:
            return False
        latest = max(self._last_ts.values())
        active = [e for e, t in self._last_ts.items() if t >= latest - self.horizon]
        n_alarmed = sum(1 for e in active if e in self.alarmed_)
        if len(active) < self.min_entities or n_alarmed < self.share * len(active):
            if self.on_:
                self.on_ = False
                self.ends_[-1] = first
            return False
        if not self.on_:  # a new shift: what came before it is the old operating point
            self.on_ = True
            self.starts_ = [*self.starts_, first][-FLEET_STARTS:]
            self.ends_ = [*self.ends_, math.nan][-FLEET_STARTS:]
        return True

    def rate(self) -> float:
        """Windows scored per second of stream time over the whole fleet (NaN: unknown)."""
        n, t0, t1 = (float(v) for v in self.scored_)
        return n / (t1 - t0) if n > 0 and t1 > t0 else math.nan

    def history(self) -> FleetHistory:
        return FleetHistory(tuple(self.starts_), tuple(self.ends_), self.rate())

    def state(self) -> State:
        return {"meta": to_json({"on": self.on_, "starts": self.starts_, "ends": self.ends_,
                                 "alarmed": sorted(self.alarmed_), "last_ts": self._last_ts, "scored": self.scored_.tolist()})}

    def restore(self, state: State) -> None:
        m = from_json(state["meta"])
        self.on_ = bool(m["on"])
        self.starts_ = [float(t) for t in m["starts"]]
        self.ends_ = [float(t) for t in m["ends"]]
        self.alarmed_ = {str(e) for e in m["alarmed"]}
        self._last_ts = {str(e): float(t) for e, t in m["last_ts"].items()}
        self.scored_ = np.asarray(m["scored"], dtype=np.float64)
