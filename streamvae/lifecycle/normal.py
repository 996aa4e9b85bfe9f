"""The normal-window buffer: what the next model learns from.

Learning the faults themselves is the failure to avoid, so a window is kept only if the
pipeline judged it normal (below threshold, outside any alert episode) and it did not
end within ``margin`` seconds of stream time before an episode opened or after one
closed (a fault usually starts before the model is sure, and lingers after it goes
quiet). "Before" cannot be known when the window arrives: sampled windows wait per
entity until ``margin`` seconds of that entity's stream time have passed without an
episode, and are dropped if one opens. While a fleet-wide shift is on
(:mod:`streamvae.lifecycle.fleet`) every entity's windows are sampled, flagged or not.

The windows live in a :class:`~streamvae.lifecycle.reservoir.StratifiedReservoir`
(bounded, shared fairly between entities); which of them a retrain learns is
:mod:`streamvae.lifecycle.learn`'s choice.

Examples
--------
>>> import numpy as np
>>> buf = NormalBuffer(max_windows=100, window=4, n_features=2, sample_every=1, margin=0.0)
>>> for t in range(300):
...     _ = buf.add("pump-1" if t % 10 else "pump-2", float(t), np.zeros((4, 2), np.float32))
>>> counts = buf.per_entity()
>>> counts["pump-2"], counts["pump-1"]      # 30 offered by pump-2, all kept; pump-1 fills the rest
(30, 70)
>>> windows, entities, end_ts = buf.snapshot()
>>> windows.shape, bool(np.all(np.diff(end_ts) >= 0))
((100, 4, 2), True)
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.core.pipeline import BatchResult
from streamvae.errors import ConfigError
from streamvae.lifecycle import learn
from streamvae.lifecycle.fleet import FleetShift
from streamvae.lifecycle.learn import FleetHistory
from streamvae.lifecycle.reservoir import StratifiedReservoir
from streamvae.lifecycle.state import State, from_json, load_npz, nest, part, save_npz, to_json, windows_or_empty

# During a fleet-wide shift, keep 1 window in FLEET_SAMPLE_EVERY (not 1 in sample_every): the
# next retrain must find enough of the new point (retrain.min_windows) minutes into the shift.
# At 1 in 10 the drift test's buffer held ~220 of its windows 600 s into the move, too few,
# so candidates were trained on the old point too, and the gate rejected them.
FLEET_SAMPLE_EVERY = 2

Sample = tuple[str, float, npt.NDArray[np.float32]]  # (key, end_ts, values)


def _check(cond: bool, key: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"retrain.{key} must be {allowed}; got {value!r}")


@dataclass
class BufferCounts:
    """What happened to the normal windows offered (all counters only grow)."""

    seen: int = 0  # normal windows offered by the pipeline
    sampled: int = 0  # passed 1-in-N sampling and the margins, and were offered to the store
    dropped_near_episode: int = 0  # sampled but within ``margin`` of an episode
    evicted: int = 0  # windows that left the store to make room
    fleet_shift: int = 0  # sampled although flagged: most of the fleet alarmed at once (a new operating point)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Entity:
    seen: int = 0
    last_close: float = float("-inf")
    pending: deque[tuple[float, npt.NDArray[np.float32]]] = field(default_factory=deque)


class NormalBuffer:
    """Normal windows for retraining, sampled and stratified by entity (see the module doc).

    Parameters
    ----------
    max_windows : windows kept over all entities (``retrain.max_windows``).
    window, n_features : W and F of the model.
    sample_every : keep 1 normal window in N per entity (consecutive windows with stride
        1 overlap almost entirely; sampling spreads the buffer over more time).
    margin : seconds of stream time before an episode opens and after it closes in
        which no window is kept.
    max_pending : windows waiting out the margin, per entity; the oldest is dropped
        beyond it (counted in ``dropped_near_episode``).
    seed : the reservoir's randomness.
    fleet_share, fleet_min : see :class:`~streamvae.lifecycle.fleet.FleetShift`. While a
        shift is on, every entity's windows are sampled 1 in ``FLEET_SAMPLE_EVERY``
        whether flagged or not (counted in ``fleet_shift``); a window that the retrained
        model also finds an outlier still counts as contamination at the gate. For
        :meth:`span` seconds after the shift ends (the plant settles at its new point)
        normal windows are sampled 1 in ``FLEET_SAMPLE_EVERY`` too, and a fleet-wide
        alarm's episodes closing leave no margin (they were the old model on the new
        normal, not faults).
    min_windows, shift_span : see :func:`~streamvae.lifecycle.learn.span`.
    """

    def __init__(self, max_windows: int, window: int, n_features: int, sample_every: int = 10,
                 margin: float = 300.0, max_pending: int = 10_000, seed: int = 0, fleet_share: float = 0.5,
                 fleet_min: int = 4, min_windows: int = 1000, shift_span: float = 0.0) -> None:
        _check(isinstance(sample_every, int) and sample_every >= 1, "sample_every", "an int >= 1", sample_every)
        _check(isinstance(margin, (int, float)) and margin >= 0, "margin", "seconds >= 0", margin)
        self.max_windows = max_windows
        self.window = window
        self.n_features = n_features
        self.sample_every = sample_every
        self.margin = float(margin)
        self.max_pending = max_pending
        self.seed = seed
        self.min_windows = min_windows
        self.shift_span = float(shift_span)
        self.store_ = StratifiedReservoir(max_windows, window, n_features, seed)
        self.fleet_ = FleetShift(fleet_share, fleet_min, max(self.margin, 60.0))
        self.counts_ = BufferCounts()
        # the fleet history as of the newest window that entered: what the choice of
        # training windows uses (and what every published sample carries)
        self.choice_ = FleetHistory()
        self._ent: dict[str, _Entity] = {}

    def __len__(self) -> int:
        return len(self.store_)

    def add(self, entity: str, end_ts: float, values: npt.ArrayLike) -> bool:
        """Store one window that is already known to be a normal sample (e.g. read back
        from the samples topic, where the daemon applied the margins); True if kept."""
        before = self.store_.evicted_
        kept = self.store_.add(entity, end_ts, values)
        self.counts_.evicted += self.store_.evicted_ - before
        return kept

    def observe(self, result: BatchResult) -> list[Sample]:
        """Take one batch's result; return the windows that entered the buffer now
        (entity, end_ts, values), in the order they entered.

        ``result.normal`` holds the windows the pipeline judged normal outside any open
        episode; ``result.alerts`` says where episodes opened and closed; ``result.scored``
        moves each entity's stream time forward. The windows are taken one at a time, in
        arrival order, each with the alerts of its own window, so the buffer ends the
        same however the stream was cut into batches (a stretch read again after a
        restart, in other polls, is learned as it was the first time).
        """
        events: dict[tuple[str, float], list[Any]] = {}
        for a in result.alerts:
            events.setdefault((a.entity, a.window_end), []).append(a)
        normal = {(w.entity, w.end_index): w for w in result.normal}
        windows = result.windows
        added: list[Sample] = []
        for j, s in enumerate(result.scored):
            entity, t = s.entity, s.end_ts
            st = self._state(entity)
            kinds = set()
            for a in events.pop((entity, t), ()):
                kinds.add(a.kind)
                if a.kind == "open":
                    # everything still waiting ended within the margin before this episode
                    keep = deque((tp, v) for tp, v in st.pending if tp < t - self.margin)
                    self.counts_.dropped_near_episode += len(st.pending) - len(keep)
                    st.pending = keep
                elif a.kind == "close" and not self.fleet_.on_:
                    # a fleet-wide alarm ending (the serving model swapped, or the plant
                    # settled) is the plant, not a fault: no margin after it, or the buffer
                    # would miss the first margin seconds of the new operating point
                    st.last_close = max(st.last_close, t)
            on = self.fleet_.see(entity, t, "open" in kinds, "close" in kinds)
            w = normal.get((entity, s.end_index))
            if w is not None:
                self._offer(st, t, w.values)
            elif on and windows is not None and (entity in self.fleet_.alarmed_ or s.flagged):
                st.seen += 1
                if (st.seen - 1) % FLEET_SAMPLE_EVERY == 0:
                    self.counts_.fleet_shift += 1
                    self._keep(entity, t, windows[j], added)
            while st.pending and st.pending[0][0] <= t - self.margin:
                tp, v = st.pending.popleft()
                self.counts_.sampled += 1
                self._keep(entity, tp, v, added)
        return added

    def _offer(self, st: _Entity, t: float, values: npt.NDArray[np.float32]) -> None:
        """A window judged normal: sampled 1 in N, it waits out the margin (or is dropped
        within the margin after an episode)."""
        self.counts_.seen += 1
        st.seen += 1
        ends = self.fleet_.ends_
        settling = bool(ends) and ends[-1] == ends[-1] and t < ends[-1] + self.span()
        if (st.seen - 1) % (FLEET_SAMPLE_EVERY if settling else self.sample_every):
            return
        if st.last_close <= t < st.last_close + self.margin:
            self.counts_.dropped_near_episode += 1
            return
        if len(st.pending) >= self.max_pending:
            st.pending.popleft()
            self.counts_.dropped_near_episode += 1
        st.pending.append((t, values))

    def _keep(self, entity: str, t: float, values: npt.NDArray[np.float32], added: list[Sample]) -> None:
        if self.add(entity, t, values):
            added.append((entity, t, values))
            self.choice_ = self.fleet_.history()

    @property
    def fleet_shift_on(self) -> bool:
        """Most of the fleet alarms together now (see ``fleet_share``)."""
        return self.fleet_.on_

    def _state(self, entity: str) -> _Entity:
        st = self._ent.get(entity)
        if st is None:
            st = self._ent[entity] = _Entity()
        return st

    def span(self, min_windows: int | None = None) -> float:
        """:func:`~streamvae.lifecycle.learn.span` at the fleet's rate now."""
        return learn.span(self.fleet_.history(), self.min_windows if min_windows is None else min_windows,
                          self.sample_every, self.shift_span)

    def training_windows(self, min_windows: int = 200) -> tuple[npt.NDArray[np.float32], list[str]]:
        """The windows a retrain should learn (:func:`~streamvae.lifecycle.learn.training_windows`,
        with the fleet history as of the newest buffered window)."""
        x, ents, ts = self.snapshot()
        span = learn.span(self.choice_, min_windows, self.sample_every, self.shift_span)
        return learn.training_windows(x, ents, ts, self.choice_, span, min_windows)

    def pending(self) -> int:
        """Windows still waiting out the margin."""
        return sum(len(s.pending) for s in self._ent.values())

    def per_entity(self) -> dict[str, int]:
        """Windows held per entity."""
        return self.store_.counts()

    def snapshot(self) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.float64]]:
        """(windows (N, W, F) float32, entities, end_ts (N,)), in time order: the newest
        windows last, so a caller can hold the most recent part out of training."""
        return self.store_.snapshot()

    # -- state ------------------------------------------------------------------------
    def state(self) -> State:
        """Everything, windows waiting out the margin included (see :mod:`~streamvae.lifecycle.state`)."""
        pend = [(e, t, v) for e, st in self._ent.items() for t, v in st.pending]
        meta = {"counts": self.counts_.as_dict(), "choice": self.choice_.to_dict(),
                "entities": {e: [st.seen, st.last_close] for e, st in self._ent.items()}}
        return {**nest("store", self.store_.state()), **nest("fleet", self.fleet_.state()), "meta": to_json(meta),
                "pending_entity": np.asarray([e for e, _, _ in pend], dtype=np.str_),
                "pending_ts": np.asarray([t for _, t, _ in pend], dtype=np.float64),
                "pending_values": windows_or_empty([v for _, _, v in pend], self.window, self.n_features)}

    def restore(self, state: State) -> "NormalBuffer":
        """Continue from :meth:`state`."""
        self.store_.restore(part(state, "store"))
        self.fleet_.restore(part(state, "fleet"))
        meta = from_json(state["meta"])
        self.counts_ = BufferCounts(**meta["counts"])
        self.choice_ = FleetHistory.from_dict(meta["choice"])
        self._ent = {e: _Entity(int(seen), float(close)) for e, (seen, close) in meta["entities"].items()}
        for e, t, v in zip(state["pending_entity"].tolist(), state["pending_ts"].tolist(), state["pending_values"]):
            self._state(str(e)).pending.append((float(t), v))
        return self

    def save(self, path: str | Path) -> Path:
        """Export :meth:`state` to one ``.npz`` (atomic), for the retrain job."""
        return save_npz(path, self.state(), "normal")

    def load(self, path: str | Path) -> "NormalBuffer":
        """Refill from :meth:`save`'s file."""
        return self.restore(load_npz(path, "normal"))
