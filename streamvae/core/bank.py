"""Thresholds per entity with a global fallback: one :class:`ThresholdBank` per pipeline.

Examples
--------
>>> import numpy as np
>>> bank = ThresholdBank("spot", {"q": 1e-3}, min_history=50, min_history_s=600.0)
>>> _ = bank.warm_start(np.random.default_rng(0).exponential(size=5000))
>>> for t in range(100):                      # 100 windows in 99 s: too short a span
...     _ = bank.update("pump-1", 0.5, ts=float(t))
>>> bank.has_own("pump-1")
False
>>> _ = bank.update("pump-1", 0.5, ts=700.0)  # 700 s of its own scores: its tracker now
>>> bank.has_own("pump-1")
True
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from collections import OrderedDict
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt

from streamvae.config import ThresholdConfig
from streamvae.core.thresholds import Decision, Threshold
from streamvae.core.trackers import make_threshold, threshold_from_state
from streamvae.errors import NotCalibratedError, check, interval


_FIELDS = {f.name: f for f in dataclasses.fields(ThresholdConfig)}
_NAN = math.nan


def _in_order(buf: np.ndarray, n: int) -> np.ndarray:
    """A ring of ``len(buf)`` slots that received ``n`` values, oldest first."""
    size = len(buf)
    if n <= size:
        return buf[:n]
    k = n % size
    return np.concatenate([buf[k:], buf[:k]])


class ThresholdBank:
    """One tracker per entity, created lazily, with a global tracker as the fallback.

    Until an entity has ``min_history`` unflagged scores of its own, its scores are
    judged (and learned) by the global tracker; then its own tracker is warm-started
    from them. At most ``max_entities`` entities keep state; the least recently seen is
    evicted first (``evicted_`` counts them) and simply starts again from the global
    tracker if it comes back. Per-entity history is a float32 buffer, so memory per
    entity is bounded (scripts/bench_thresholds.py measures 10,000 entities).

    ``hold`` > 0: a score is judged at once but learned only after ``hold`` more windows
    of its entity came unflagged (in runs, ``hold`` at a time: half the calls), and never
    when one of those is flagged, nor for ``hold`` windows after a flagged one. The
    pipeline sets it to the number of later windows that share a reading with a window,
    so no window that shares a reading with a flagged one teaches the thresholds: the
    edges of a fault score just under the threshold, and learned as peaks they lifted it
    after every fault until faults went unflagged (the drift test, a failure in CI:
    SPOT's fleet threshold 171 -> 202 over 45 min with 20 faults, 10 of them missed;
    offline, the same model and feed: 171 -> 231, and 169-171 throughout with ``hold``
    = 29). Memory: at most ``4 hold`` doubles an entity.
    """

    def __init__(self, kind: str = "spot", params: dict[str, Any] | None = None, min_history: int = 500,
                 max_entities: int = 100_000, per_entity: bool = True, entity_params: dict[str, Any] | None = None,
                 min_history_s: float = 0.0, hold: int = 0) -> None:
        check("hold", interval(0, 1_000_000, integer=True), hold)
        for key, v in (("min_history", min_history), ("min_history_s", min_history_s), ("max_entities", max_entities)):
            f = _FIELDS[key]  # the rule of [threshold] in a config file
            check(f"threshold.{key}", f.metadata["check"], v, allowed=f.metadata["allowed"])
        self.min_history_s = float(min_history_s)
        self.kind = kind
        self.params = dict(params or {})
        # per-entity trackers keep fewer peaks: memory is paid per entity
        self.entity_params = dict(entity_params if entity_params is not None else self.params)
        if kind in ("spot", "dspot"):
            self.entity_params.setdefault("max_peaks", 200)
        self.min_history = min_history
        self.max_entities = max_entities
        self.per_entity = per_entity
        self.global_: Threshold = make_threshold(kind, **self.params)
        self._own: dict[str, Threshold] = {}
        # per entity without a tracker of its own: its latest unflagged scores (a ring of
        # min_history float32), how many it has had, and the event time of the first
        self._hist: dict[str, tuple[np.ndarray, list[float]]] = {}
        # every entity with state (own tracker or history), least recently seen first:
        # one order across both kinds of state, so eviction really takes the oldest
        self._lru: OrderedDict[str, None] = OrderedDict()
        self.evicted_ = 0
        self.hold = hold
        # per entity, with hold: [windows still to skip after a flag, its held scores and
        # their ts, oldest first, as score, ts, score, ts... in C doubles (8 bytes each, ts
        # NaN for None)]; at most max_entities of them, the first added dropped first
        self._held: dict[str, list[Any]] = {}

    def warm_start(self, scores: Iterable[float]) -> "ThresholdBank":
        """(Re)calibrate the global tracker from normal scores; forget per-entity state."""
        self.global_ = make_threshold(self.kind, **self.params).warm_start(scores)
        self._own.clear()
        self._hist.clear()
        self._lru.clear()
        self._held.clear()
        return self

    recalibrate = warm_start  # a new model: its scores are on a new scale

    def get(self, entity: str | None = None) -> float | None:
        own = self._own.get(entity) if entity is not None and self._own else None
        v = own.get() if own is not None else None
        return v if v is not None else self.global_.get()

    def has_own(self, entity: str) -> bool:
        return entity in self._own

    def __len__(self) -> int:
        return len(self._lru)

    def update(self, entity: str, score: float, ts: float | None = None) -> Decision:
        """Judge ``score`` of ``entity``'s window (ending at event time ``ts``; None: the
        time span rule is not applied); learn from it now, or with ``hold``, later."""
        if not self.hold:
            return self._learn(entity, score, ts)
        thr = self.get(entity)
        held = self._held.get(entity)
        if held is None:
            held = self._held[entity] = [0, array("d")]
            if len(self._held) > self.max_entities:  # the first one added goes, with at most 2 hold scores
                del self._held[next(iter(self._held))]
        q = held[1]
        if thr is not None and score > thr:
            self._release(entity, q, len(q) - 2 * self.hold)  # those already `hold` windows old (2 doubles each)
            del q[:]
            held[0] = self.hold
            return self._learn(entity, score, ts)  # as its tracker learns a flagged score
        if held[0]:
            held[0] -= 1
            return thr, False
        q.append(score)
        q.append(_NAN if ts is None else ts)  # NaN passes the time span rule as None does
        if len(q) >= 4 * self.hold:  # 2 hold scores held: learn the older hold of them
            self._release(entity, q, len(q) - 2 * self.hold)
        return thr, False

    def _release(self, entity: str, q: "array[float]", k: int) -> None:
        """Learn the oldest ``k`` // 2 held scores of ``entity`` (``q``: score, ts, ...)."""
        if k <= 0:
            return
        if not self.per_entity:  # the global tracker alone: no time span rule, no history
            update = self.global_.update
            for x in q[0:k:2]:
                update(x)
        else:
            learn = self._learn
            for i in range(0, k, 2):
                learn(entity, q[i], q[i + 1])
        del q[:k]

    def _learn(self, entity: str, score: float, ts: float | None) -> Decision:
        own = self._own.get(entity)
        if own is not None:
            self._lru.move_to_end(entity)
            d = own.update(score)
            if d[0] is not None:
                return d
        d = self.global_.update(score)
        thr, flagged = d
        if not self.per_entity or flagged or thr is None or not math.isfinite(score):
            return d
        h = self._hist.get(entity)
        self._lru[entity] = None
        self._lru.move_to_end(entity)
        if h is None:
            h = self._hist[entity] = (np.full(self.min_history, np.nan, np.float32), [0, math.nan if ts is None else ts])
            self._evict()
        buf, meta = h
        n = int(meta[0])
        buf[n % self.min_history] = score
        meta[0] = n = n + 1
        if n >= self.min_history and (ts is None or not ts - meta[1] < self.min_history_s):
            del self._hist[entity]
            try:
                self._own[entity] = make_threshold(self.kind, **self.entity_params).warm_start(_in_order(buf, n))
            except NotCalibratedError:  # too few scores for this kind: stay on the fallback
                if entity not in self._own:
                    self._lru.pop(entity, None)
        return d

    def _evict(self) -> None:
        # the entity just added is the most recently seen: never the victim (max_entities >= 1)
        while len(self._lru) > self.max_entities:
            victim, _ = self._lru.popitem(last=False)
            self._own.pop(victim, None)
            self._hist.pop(victim, None)
            self.evicted_ += 1

    def to_state(self, hist: bool = True) -> dict[str, Any]:
        """What the bank learned, JSON-ready. ``hist=False``: without the entities' score
        histories (up to ``min_history`` scores each: 80 MB of floats for 10,000 entities,
        far too much for JSON), which :meth:`hist_arrays` gives as arrays instead."""
        d = {
            "kind": self.kind, "params": self.params, "entity_params": self.entity_params, "min_history": self.min_history,
            "min_history_s": self.min_history_s,
            "max_entities": self.max_entities, "per_entity": self.per_entity, "global": self.global_.to_state(),
            "own": {e: t.to_state() for e, t in self._own.items()},
            "order": list(self._lru), "hold": self.hold,
        }
        if hist:
            d["hist"] = {e: {"scores": _in_order(buf, int(m[0])).tolist(), "n": int(m[0]),
                             "first_ts": None if math.isnan(m[1]) else m[1]} for e, (buf, m) in self._hist.items()}
            d["held"] = {e: {"skip": skip, "scores": [[q[i], None if math.isnan(q[i + 1]) else q[i + 1]]
                                                      for i in range(0, len(q), 2)]} for e, (skip, q) in self._held.items()}
        return d

    def hist_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The entities' score histories as arrays (a copy; see ``to_state``): each one's
        scores oldest first, one after the other in ``hist_scores``, how many scores it
        received in all and when its first one ended."""
        keys = list(self._hist)
        seqs = [_in_order(self._hist[e][0], int(self._hist[e][1][0])) for e in keys]
        return {"hist_keys": np.asarray(keys, dtype=np.str_),
                "hist_n": np.asarray([self._hist[e][1][0] for e in keys], dtype=np.int64),
                "hist_first": np.asarray([self._hist[e][1][1] for e in keys], dtype=np.float64),
                "hist_len": np.asarray([len(q) for q in seqs], dtype=np.int64),
                "hist_scores": np.concatenate(seqs).astype(np.float32) if seqs else np.empty(0, np.float32),
                **self._held_arrays()}

    def _held_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The held scores (see the class doc) as arrays, entity after entity, oldest first."""
        flat = np.frombuffer(b"".join(h[1].tobytes() for h in self._held.values()), dtype=np.float64)
        return {"held_keys": np.asarray(list(self._held), dtype=np.str_),
                "held_skip": np.asarray([h[0] for h in self._held.values()], dtype=np.int64),
                "held_len": np.asarray([len(h[1]) // 2 for h in self._held.values()], dtype=np.int64),
                "held_scores": flat[0::2].copy(), "held_ts": flat[1::2].copy()}

    @classmethod
    def from_state(cls, d: dict[str, Any], arrays: dict[str, npt.NDArray[Any]] | None = None,
                   hold: int | None = None) -> "ThresholdBank":
        """The bank :meth:`to_state` described; its histories from ``d["hist"]`` or, when
        saved apart, from ``arrays`` (:meth:`hist_arrays`). ``hold``: the caller's, in place
        of the saved one (a state saved before ``hold`` existed has none)."""
        b = cls(d["kind"], d["params"], d["min_history"], d["max_entities"], d["per_entity"], d["entity_params"],
                d.get("min_history_s", 0.0), d.get("hold", 0) if hold is None else hold)
        b.global_ = threshold_from_state(d["global"])
        b._own = {e: threshold_from_state(s) for e, s in d["own"].items()}
        hist: list[tuple[str, Any, int, Any]] = []  # (entity, scores oldest first, received, first end)
        for e, h in d.get("hist", {}).items():
            vals = h["scores"] if isinstance(h, dict) else h  # a plain list: state written before the time span rule
            hist.append((e, vals, int(h["n"]) if isinstance(h, dict) else len(vals),
                         h.get("first_ts") if isinstance(h, dict) else None))
        if arrays is not None:
            ends = np.cumsum(arrays["hist_len"])
            for e, n, first, lo, hi in zip(arrays["hist_keys"].tolist(), arrays["hist_n"].tolist(),
                                           arrays["hist_first"].tolist(), (ends - arrays["hist_len"]).tolist(), ends.tolist()):
                hist.append((str(e), arrays["hist_scores"][lo:hi], int(n), first))
        for e, vals, n, first in hist:
            buf = np.full(b.min_history, np.nan, np.float32)
            k = len(vals)
            buf[(n - k + np.arange(k)) % b.min_history] = vals
            b._hist[e] = (buf, [n, math.nan if first is None else float(first)])
        b._lru = OrderedDict.fromkeys(d["order"])
        held = [(e, h["skip"], h["scores"]) for e, h in d.get("held", {}).items()]
        if arrays is not None and "held_keys" in arrays:
            ends = np.cumsum(arrays["held_len"])
            pairs = list(zip(arrays["held_scores"].tolist(), arrays["held_ts"].tolist()))
            held += [(str(e), skip, pairs[hi - n : hi]) for e, skip, n, hi in
                     zip(arrays["held_keys"].tolist(), arrays["held_skip"].tolist(), arrays["held_len"].tolist(), ends.tolist())]
        for e, skip, scores in held:
            b._held[e] = [int(skip), array("d", (_NAN if v is None else float(v) for pair in scores for v in pair))]
        return b
