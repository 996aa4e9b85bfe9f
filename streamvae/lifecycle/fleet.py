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
>>> fleet = FleetShift(share=0.5, min_entities=2)
>>> fleet.see("a", 10.0, opened=True), fleet.see("b", 10.0, opened=True)  # one of two is not yet a shift
(False, True)
>>> fleet.see("a", 20.0, closed=True), fleet.see("b", 20.0, closed=True)  # half the fleet is still "most"
(True, False)
>>> fleet.history().starts, fleet.history().ends
((10.0,), (20.0,))
"""

from __future__ import annotations

import math
import numpy as np

from streamvae.core.pipeline import BatchResult
from streamvae.lifecycle.learn import FLEET_STARTS, FleetHistory
from streamvae.lifecycle.state import State, from_json, to_json


class FleetShift:
    """Is most of the fleet alarming together (see the module doc)?

    Fed one scored window at a time, in arrival order (:meth:`see`), so what it decides
    does not depend on how the stream was cut into batches: a daemon that reads a stretch
    again after a restart, in other polls, decides as it did the first time. The share
    is judged again whenever an episode opens or closes, and otherwise every ``tick``
    seconds of stream time (entities falling silent leave the live fleet), so a window
    costs O(1) and the fleet is counted only then.

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
        self.tick = self.horizon / 10
        self.on_ = False
        self.starts_: list[float] = []  # when each of the last FLEET_STARTS shifts began, oldest first
        self.ends_: list[float] = []  # ... and ended (NaN: still on), aligned with starts_
        self.alarmed_: set[str] = set()  # entities inside an open episode
        self._last_ts: dict[str, float] = {}  # entity -> latest scored window end
        self._judged = -math.inf  # the tick of stream time the share was last judged in
        self.scored_ = np.array([0.0, np.nan, np.nan])  # windows scored, first and latest end_ts: the fleet's rate

    def see(self, entity: str, end_ts: float, opened: bool = False, closed: bool = False) -> bool:
        """One scored window (``opened`` / ``closed``: an episode of its entity opened or
        closed at it); True when it belongs to a shift."""
        changed = False
        if opened and entity not in self.alarmed_:
            self.alarmed_.add(entity)
            changed = True
        elif closed and entity in self.alarmed_:
            self.alarmed_.discard(entity)
            changed = True
        if end_ts > self._last_ts.get(entity, -math.inf):
            self._last_ts[entity] = end_ts
        n, t0, t1 = self.scored_
        self.scored_ = np.array([n + 1, np.fmin(t0, end_ts), np.fmax(t1, end_ts)])
        if self.share <= 0:
            return False
        tick = float(math.floor(float(self.scored_[2]) / self.tick))
        if changed or tick != self._judged:
            self._judged = tick
            self._judge(end_ts)
        return self.on_

    def update(self, result: BatchResult) -> bool:
        """Every window of one batch (:meth:`see`, alerts at the window they belong to);
        whether a shift is on after it."""
        events: dict[tuple[str, float], set[str]] = {}
        for a in result.alerts:
            events.setdefault((a.entity, a.window_end), set()).add(a.kind)
        for s in result.scored:
            kinds = events.pop((s.entity, s.end_ts), ())
            self.see(s.entity, s.end_ts, "open" in kinds, "close" in kinds)
        return self.on_

    def _judge(self, at: float) -> None:
        latest = float(self.scored_[2])
        active = [e for e, t in self._last_ts.items() if t >= latest - self.horizon]
        n_alarmed = sum(1 for e in active if e in self.alarmed_)
        if len(active) < self.min_entities or n_alarmed < self.share * len(active):
            if self.on_:
                self.on_ = False
                self.ends_[-1] = at
        elif not self.on_:  # a new shift: what came before it is the old operating point
            self.on_ = True
            self.starts_ = [*self.starts_, at][-FLEET_STARTS:]
            self.ends_ = [*self.ends_, math.nan][-FLEET_STARTS:]

    def rate(self) -> float:
        """Windows scored per second of stream time over the whole fleet (NaN: unknown)."""
        n, t0, t1 = (float(v) for v in self.scored_)
        return n / (t1 - t0) if n > 0 and t1 > t0 else math.nan

    def history(self) -> FleetHistory:
        return FleetHistory(tuple(self.starts_), tuple(self.ends_), self.rate())

    def state(self) -> State:
        return {"meta": to_json({"on": self.on_, "starts": self.starts_, "ends": self.ends_, "judged": self._judged,
                                 "alarmed": sorted(self.alarmed_), "last_ts": self._last_ts, "scored": self.scored_.tolist()})}

    def restore(self, state: State) -> None:
        m = from_json(state["meta"])
        self.on_ = bool(m["on"])
        self.starts_ = [float(t) for t in m["starts"]]
        self.ends_ = [float(t) for t in m["ends"]]
        self.alarmed_ = {str(e) for e in m["alarmed"]}
        self._last_ts = {str(e): float(t) for e, t in m["last_ts"].items()}
        self.scored_ = np.asarray(m["scored"], dtype=np.float64)
        self._judged = float(m.get("judged", -math.inf))
