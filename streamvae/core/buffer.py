"""Bounded stores of windows for retraining: normal windows, and confirmed anomalies.

:class:`NormalBuffer` keeps a sample of the windows the pipeline judged normal, for the
next model to learn from. Learning the faults themselves is the failure to avoid, so a
window is kept only if it was below threshold, outside any alert episode, and not within
``margin`` seconds of stream time before an episode opened or after one closed (the
fault usually starts before the model is sure, and lingers after it goes quiet).
"Before" cannot be known when the window arrives: sampled windows wait per entity until
``margin`` seconds of that entity's stream time have passed without an episode, and are
dropped if one opens.

:class:`AnomalyBank` keeps windows of episodes that actually opened (the flagged
windows of confirmed alerts): the validation gate checks that a new model still
separates them from normal windows.

Both share one store, :class:`StratifiedReservoir`: a fixed array of ``capacity``
windows shared out max-min fairly between keys (entities, or episodes), with reservoir
sampling inside each key's share, so a chatty entity cannot crowd out the rest and old
and recent windows both stay represented. Memory is ``capacity x W x F`` float32 plus a
few numbers per window, and a saved buffer (``.npz``, loaded with ``allow_pickle=False``)
is never larger.

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

import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.pipeline import BatchResult
from streamvae.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = "streamvae-buffer/1"
FLEET_STARTS = 16  # fleet-wide shifts remembered (NormalBuffer.training_windows)
# During a fleet-wide shift, keep 1 window in FLEET_SAMPLE_EVERY (not 1 in sample_every): the
# next retrain must find enough of the new point (retrain.min_windows) minutes into the shift.
# At 1 in 10 the drift test's buffer held ~220 of its windows 600 s into the move, too few,
# so candidates were trained on the old point too, and the gate rejected them.
FLEET_SAMPLE_EVERY = 2


def _check(cond: bool, key: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"retrain.{key} must be {allowed}; got {value!r}")


class StratifiedReservoir:
    """``capacity`` windows (W, F) shared max-min fairly between keys, reservoir-sampled per key.

    While there is room every offered window is kept. Once full, a window of key ``k``
    either takes a slot from the key holding the most windows (when ``k`` holds fewer:
    the shares level out, so every key ends with ``min(offered, fair share)``), or,
    when ``k`` already holds the most, replaces one of ``k``'s own windows with
    probability ``held / offered`` (Algorithm R): each key's windows stay a uniform
    sample of everything it ever offered, old and recent alike.
    """

    def __init__(self, capacity: int, window: int, n_features: int, seed: int = 0) -> None:
        _check(isinstance(capacity, int) and capacity >= 1, "max_windows", "an int >= 1", capacity)
        self.capacity = capacity
        self.window = window
        self.n_features = n_features
        self.seed = seed
        self._values = np.empty((capacity, window, n_features), np.float32)
        self.clear()

    def clear(self) -> None:
        """Forget every window and count (the array is reused)."""
        self._rng = np.random.default_rng(self.seed)
        self._end_ts = np.full(self.capacity, np.nan)
        self._key_of: list[str | None] = [None] * self.capacity
        self._free = list(range(self.capacity - 1, -1, -1))
        self._slots: dict[str, list[int]] = {}
        self._offered: dict[str, int] = {}
        # keys by how many windows they hold, and the largest such count: O(1) "who holds most"
        self._by_size: dict[int, set[str]] = {}
        self._max = 0
        self.evicted_ = 0

    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def _resize(self, key: str, old: int, new: int) -> None:
        if old > 0:
            s = self._by_size[old]
            s.discard(key)
            if not s:
                del self._by_size[old]
        if new > 0:
            self._by_size.setdefault(new, set()).add(key)
        if new > self._max:
            self._max = new
        while self._max > 0 and self._max not in self._by_size:
            self._max -= 1

    def _put(self, slot: int, key: str, end_ts: float, values: npt.NDArray[np.float32]) -> None:
        self._values[slot] = values
        self._end_ts[slot] = end_ts
        self._key_of[slot] = key

    def _take(self, key: str, i: int) -> int:
        """Remove the ``i``-th window of ``key``; its slot."""
        slots = self._slots[key]
        n = len(slots)
        slot = slots[i]
        slots[i] = slots[-1]
        slots.pop()
        self._resize(key, n, n - 1)
        if not slots:
            del self._slots[key]
        self._key_of[slot] = None
        return slot

    def add(self, key: str, end_ts: float, values: npt.ArrayLike) -> bool:
        """Offer one window; True if it was stored."""
        v = np.asarray(values, dtype=np.float32)
        if v.shape != (self.window, self.n_features):
            raise DataError(f"a buffered window must have shape ({self.window}, {self.n_features}); got {v.shape}")
        n_off = self._offered.get(key, 0) + 1
        self._offered[key] = n_off
        mine = self._slots.get(key)
        held = len(mine) if mine is not None else 0
        if self._free:
            slot = self._free.pop()
        elif held < self._max:  # take a slot from the key that holds the most
            victim = next(iter(self._by_size[self._max]))
            slot = self._take(victim, int(self._rng.integers(self._max)))
            self.evicted_ += 1
        else:  # already holds the most: reservoir sampling within its own share
            j = int(self._rng.integers(n_off))
            if j >= held:
                return False
            assert mine is not None
            self._put(mine[j], key, end_ts, v)
            self.evicted_ += 1
            return True
        self._put(slot, key, end_ts, v)
        self._slots.setdefault(key, []).append(slot)
        self._resize(key, held, held + 1)
        return True

    def counts(self) -> dict[str, int]:
        """Windows held per key."""
        return {k: len(s) for k, s in self._slots.items()}

    def offered(self) -> dict[str, int]:
        return dict(self._offered)

    def snapshot(self) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.float64]]:
        """(windows (N, W, F) float32, keys, end_ts (N,)), oldest first (a copy)."""
        used = np.array([s for s in range(self.capacity) if self._key_of[s] is not None], dtype=np.int64)
        if len(used) == 0:
            return np.empty((0, self.window, self.n_features), np.float32), [], np.empty(0)
        order = used[np.argsort(self._end_ts[used], kind="stable")]
        keys = [self._key_of[s] for s in order]
        return self._values[order].copy(), [k for k in keys if k is not None], self._end_ts[order].copy()

    # -- persistence ----------------------------------------------------------------
    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        x, keys, ts = self.snapshot()
        names = sorted(self._offered)
        return {
            "windows": x, "keys": np.asarray(keys, dtype=np.str_), "end_ts": ts,
            "offered_keys": np.asarray(names, dtype=np.str_),
            "offered": np.asarray([self._offered[k] for k in names], dtype=np.int64),
            "geometry": np.asarray([self.capacity, self.window, self.n_features], dtype=np.int64),
        }

    def restore(self, d: dict[str, npt.NDArray[Any]]) -> None:
        """Refill from :meth:`to_arrays` output (a smaller capacity keeps a fair subsample)."""
        w = d["windows"]
        if w.ndim != 3 or w.shape[1:] != (self.window, self.n_features):
            raise DataError(f"saved windows have shape {w.shape}; this buffer holds (n, {self.window}, {self.n_features})")
        self.clear()
        for key, ts, v in zip(d["keys"].tolist(), d["end_ts"].tolist(), w):
            self.add(str(key), float(ts), v)
        # the reservoir's acceptance odds depend on how many windows each key ever offered
        for key, n in zip(d["offered_keys"].tolist(), d["offered"].tolist()):
            self._offered[str(key)] = max(int(n), self._offered.get(str(key), 0))


def _save_npz(path: str | Path, arrays: dict[str, npt.NDArray[Any]]) -> Path:
    """Write atomically: a temporary sibling, then ``os.replace``."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {p}: {e.strerror or e}") from e
    return p


def _load_npz(path: str | Path, kind: str) -> dict[str, npt.NDArray[Any]]:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the {kind} file {p}: {e}") from e
    if str(d.get("format", "")) != FORMAT or str(d.get("kind", "")) != kind:
        raise DataError(f"{p} is not a streamvae {kind} file (format {FORMAT})")
    return d


@dataclass
class BufferCounts:
    """What happened to the normal windows offered (all counters only grow)."""

    seen: int = 0  # normal windows offered by the pipeline
    sampled: int = 0  # passed 1-in-N sampling and the margins, and were offered to the store
    dropped_near_episode: int = 0  # sampled but within ``margin`` of an episode
    evicted: int = 0  # windows that left the store to make room
    fleet_shift: int = 0  # sampled although flagged: most of the fleet alarmed at once (a new operating point)

    def as_dict(self) -> dict[str, int]:
        return {"seen": self.seen, "sampled": self.sampled, "dropped_near_episode": self.dropped_near_episode,
                "evicted": self.evicted, "fleet_shift": self.fleet_shift}


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
    min_windows, shift_span : see :meth:`span` (``retrain.min_windows``, ``retrain.shift_span``).
    fleet_share : when at least this share of a fleet (``fleet_min`` entities or more,
        each scored within the last ``margin`` seconds) is inside alert episodes at once,
        every entity's windows are sampled whether flagged or not, 1 in
        ``FLEET_SAMPLE_EVERY`` (counted in ``fleet_shift``). A fault hits one machine; a
        whole fleet alarming together is a new operating point (a new season, a new
        product, a re-tuned line) that the serving model has not seen, and learning only
        from windows it calls normal would starve the buffer of exactly what the next model must learn (measured: a
        plant moved 25% in load left the buffer with no window of its new normal, and
        every retrain relearnt the old one). The gate still screens what is learnt: a
        window that the retrained model also finds an outlier counts as contamination.
        0 turns it off. For :meth:`span` seconds after the shift ends (the plant settles
        at its new point) normal windows are sampled 1 in ``FLEET_SAMPLE_EVERY`` too, so
        the next retrain finds the settled plant as densely as the move.
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
        self.store_ = StratifiedReservoir(max_windows, window, n_features, seed)
        self.counts_ = BufferCounts()
        self._ent: dict[str, _Entity] = {}
        self.fleet_share = float(fleet_share)
        self.min_windows = min_windows
        self.shift_span = float(shift_span)
        self.fleet_min = fleet_min
        self._alarmed: set[str] = set()  # entities inside an open episode
        self._fleet_on = False
        self.fleet_starts_: list[float] = []  # when each of the last FLEET_STARTS shifts began, oldest first
        self.fleet_ends_: list[float] = []  # ... and ended (NaN: still on), aligned with fleet_starts_
        self._last_ts: dict[str, float] = {}  # entity -> latest scored window end
        self.scored_ = np.array([0.0, np.nan, np.nan])  # windows scored, first and latest end_ts: the fleet's rate

    def __len__(self) -> int:
        return len(self.store_)

    def add(self, entity: str, end_ts: float, values: npt.ArrayLike) -> bool:
        """Store one window that is already known to be a normal sample (e.g. read back
        from the samples topic, where the daemon applied the margins); True if kept."""
        before = self.store_.evicted_
        kept = self.store_.add(entity, end_ts, values)
        self.counts_.evicted += self.store_.evicted_ - before
        return kept

    def observe(self, result: BatchResult) -> list[tuple[str, float, npt.NDArray[np.float32]]]:
        """Take one batch's result; return the windows that entered the buffer now
        (entity, end_ts, values), e.g. to publish them on the samples topic.

        ``result.normal`` holds the windows the pipeline judged normal outside any open
        episode; ``result.alerts`` says where episodes opened and closed; ``result.scored``
        moves each entity's stream time forward.
        """
        opens: dict[str, list[float]] = {}
        for a in result.alerts:
            st = self._state(a.entity)
            if a.kind == "open":
                opens.setdefault(a.entity, []).append(a.window_end)
                # everything still waiting ended within the margin before this episode
                keep = deque((t, v) for t, v in st.pending if t < a.window_end - self.margin)
                self.counts_.dropped_near_episode += len(st.pending) - len(keep)
                st.pending = keep
            elif a.kind == "close" and not self._fleet_on:
                # a fleet-wide alarm ending (the serving model swapped, or the plant
                # settled) is the plant, not a fault: no margin after it, or the buffer
                # would miss the first margin seconds of the new operating point
                st.last_close = max(st.last_close, a.window_end)
        end = self.fleet_ends_[-1] if self.fleet_ends_ else math.nan
        settle_until = end + self.span() if end == end else -math.inf
        for w in result.normal:
            st = self._state(w.entity)
            self.counts_.seen += 1
            st.seen += 1
            t = w.end_ts
            if (st.seen - 1) % (FLEET_SAMPLE_EVERY if t < settle_until else self.sample_every):
                continue
            near_open = any(t <= o and t >= o - self.margin for o in opens.get(w.entity, ()))
            if near_open or st.last_close <= t < st.last_close + self.margin:
                self.counts_.dropped_near_episode += 1
                continue
            if len(st.pending) >= self.max_pending:
                st.pending.popleft()
                self.counts_.dropped_near_episode += 1
            st.pending.append((t, w.values))
        for a in result.alerts:
            if a.kind == "open":
                self._alarmed.add(a.entity)
            elif a.kind == "close":
                self._alarmed.discard(a.entity)
        now: dict[str, float] = {}
        first = math.inf  # the batch's earliest window end
        for s in result.scored:
            if s.end_ts > now.get(s.entity, -math.inf):
                now[s.entity] = s.end_ts
            first = min(first, s.end_ts)
        self._last_ts.update(now)
        if now:
            n, t0, t1 = self.scored_
            self.scored_ = np.array([n + len(result.scored), np.fmin(t0, first), np.fmax(t1, max(now.values()))])  # NaN: none yet
        added_fleet = self._fleet_shift(result, first)
        added: list[tuple[str, float, npt.NDArray[np.float32]]] = []
        for entity, t_now in now.items():
            held = self._ent.get(entity)
            if held is None:
                continue
            st = held
            while st.pending and st.pending[0][0] <= t_now - self.margin:
                t, v = st.pending.popleft()
                self.counts_.sampled += 1
                if self.add(entity, t, v):
                    added.append((entity, t, v))
        return added + added_fleet

    def _fleet_shift(self, result: BatchResult, first: float) -> list[tuple[str, float, npt.NDArray[np.float32]]]:
        """Sample every entity's windows, flagged or not, while most of the fleet alarms
        together (see ``fleet_share``); ``first``: the batch's earliest window end."""
        if self.fleet_share <= 0 or result.windows is None or not self._last_ts:
            return []
        latest = max(self._last_ts.values())
        active = [e for e, t in self._last_ts.items() if t >= latest - max(self.margin, 60.0)]
        alarmed = sum(1 for e in active if e in self._alarmed)
        if len(active) < self.fleet_min or alarmed < self.fleet_share * len(active):
            if self._fleet_on:
                self._fleet_on = False
                self.fleet_ends_[-1] = first
            return []
        if not self._fleet_on:  # a new shift: what came before it is the old operating point
            self._fleet_on = True
            self.fleet_starts_ = [*self.fleet_starts_, first][-FLEET_STARTS:]
            self.fleet_ends_ = [*self.fleet_ends_, math.nan][-FLEET_STARTS:]
        out = []
        for s, v in zip(result.scored, result.windows):
            if s.entity in self._alarmed or s.flagged:
                st = self._state(s.entity)
                st.seen += 1
                if (st.seen - 1) % FLEET_SAMPLE_EVERY:
                    continue
                self.counts_.fleet_shift += 1
                if self.add(s.entity, s.end_ts, v):
                    out.append((s.entity, s.end_ts, v))
        return out

    @property
    def fleet_shift_on(self) -> bool:
        """Most of the fleet alarms together now (see ``fleet_share``)."""
        return self._fleet_on

    def _state(self, entity: str) -> _Entity:
        st = self._ent.get(entity)
        if st is None:
            st = self._ent[entity] = _Entity()
        return st

    def span(self, min_windows: int | None = None) -> float:
        """Seconds of stream time a retrain after a fleet-wide shift learns: ``shift_span``
        if set, else the stream time in which this fleet offers ``min_windows`` (default
        the buffer's) windows to 1-in-``sample_every`` sampling, the span
        ``retrain.min_windows`` says is enough to learn the plant from (NaN until two
        distinct times were scored)."""
        if self.shift_span > 0:
            return self.shift_span
        n, t0, t1 = (float(v) for v in self.scored_)
        if not (n > 0 and t1 > t0):
            return math.nan
        return (self.min_windows if min_windows is None else min_windows) * self.sample_every / (n / (t1 - t0))

    def training_windows(self, min_windows: int = 200) -> tuple[npt.NDArray[np.float32], list[str]]:
        """The windows a retrain should learn. No fleet-wide shift (see ``fleet_share``)
        seen: every window. After one: the plant as it is NOW, which is

        - no window from before the latest shift that began at least :meth:`span`
          seconds before the newest window (the old operating point), and
        - of the windows sampled while a shift was on (the plant moving away from what
          the serving model knew), only the newest :meth:`span` seconds.

        Windows judged normal after a shift ended (the plant settled, or a retrained
        model fits it) are all kept. The span should cover the plant's slowest regular
        cycle. Measured offline on the drift test's plant (a
        10-minute load cycle, the load ramped 25% over 15 minutes), model warm-started
        mid-ramp, faults caught after the plant settled: trained on the whole ramp
        14/20, on the newest 2 minutes of it 2/20, on the newest 10 minutes 19-20/20.
        Fewer than ``min_windows`` windows so chosen: the newest ``min_windows`` since
        the earliest remembered shift; fewer than that: every window."""
        x, ents, ts = self.snapshot()
        if not self.fleet_starts_ or len(ts) == 0:
            return x, ents
        span = self.span(min_windows)
        cut = float(ts[-1]) - span if span == span else -math.inf
        older = [t for t in self.fleet_starts_ if t <= cut]
        keep = ts >= (older[-1] if older else self.fleet_starts_[0])
        for start, end in zip(self.fleet_starts_, self.fleet_ends_):
            keep &= ~((ts >= start) & (ts < cut) & ~(ts > end))  # NaN end (still on): no upper bound
        idx = np.flatnonzero(keep)
        if len(idx) < min_windows:
            idx = np.flatnonzero(ts >= self.fleet_starts_[0])[-min_windows:]
            if len(idx) < min_windows:
                return x, ents
        return x[idx], [ents[i] for i in idx]

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

    def save(self, path: str | Path) -> Path:
        """Write the stored windows and counters to one ``.npz`` (atomic). Its size is
        bounded by ``max_windows x W x F x 4`` bytes plus a few numbers per window."""
        d = self.store_.to_arrays()
        c = self.counts_
        d.update(format=np.asarray(FORMAT), kind=np.asarray("normal"),
                 counts=np.asarray([c.seen, c.sampled, c.dropped_near_episode, c.evicted], dtype=np.int64),
                 fleet_since=np.asarray(self.fleet_starts_, dtype=np.float64),
                 fleet_until=np.asarray(self.fleet_ends_, dtype=np.float64), scored=self.scored_)
        return _save_npz(path, d)

    def load(self, path: str | Path) -> "NormalBuffer":
        """Refill from :meth:`save`'s file (windows waiting out the margin are not saved)."""
        d = _load_npz(path, "normal")
        self.store_.restore(d)
        seen, sampled, dropped, evicted = (int(v) for v in d["counts"].tolist())
        starts = np.atleast_1d(d["fleet_since"]) if "fleet_since" in d else np.empty(0)
        ends = np.atleast_1d(d["fleet_until"]) if "fleet_until" in d else np.full(len(starts), np.nan)
        pairs = [(float(a), float(b)) for a, b in zip(starts.tolist(), ends.tolist()) if a == a][-FLEET_STARTS:]
        self.fleet_starts_ = [a for a, _ in pairs]
        self.fleet_ends_ = [b for _, b in pairs]
        if "scored" in d and d["scored"].shape == (3,):
            self.scored_ = d["scored"].astype(np.float64)
        self.counts_ = BufferCounts(seen, sampled, dropped, evicted + self.store_.evicted_)
        return self


class AnomalyBank:
    """Windows of confirmed alert episodes, kept for the validation gate.

    A flagged window counts only once its episode opens (``open_after`` consecutive
    flags): a lone false flag never enters the bank. Windows are stratified by episode,
    so one long fault does not fill the bank. Episodes flagged by a sensor rule
    (dead or stuck sensor) are left out: the model does not see those by design.

    ``observe(result)`` reads the values of the batch's scored windows from
    ``result.windows`` (aligned with ``result.scored``).
    """

    def __init__(self, max_windows: int, window: int, n_features: int, seed: int = 0) -> None:
        self.max_windows = max_windows
        self.window = window
        self.n_features = n_features
        self.store_ = StratifiedReservoir(max_windows, window, n_features, seed)
        self._streak: dict[str, list[tuple[float, npt.NDArray[np.float32]]]] = {}
        self._open: dict[str, str] = {}  # entity -> episode id
        self.episodes_ = 0

    def __len__(self) -> int:
        return len(self.store_)

    def add(self, episode_id: str, end_ts: float, values: npt.ArrayLike) -> bool:
        return self.store_.add(episode_id, end_ts, values)

    def observe(self, result: BatchResult, windows: Sequence[npt.ArrayLike] | npt.NDArray[np.float32] | None = None,
                added: list[tuple[str, float, npt.NDArray[np.float32]]] | None = None) -> int:
        """Keep the flagged windows of episodes that opened; returns how many were offered.

        ``windows``: the values of ``result.scored`` in order (default ``result.windows``);
        ``added``: if given, gets (episode id, end_ts, values) of every window offered."""
        if windows is None:
            windows = result.windows if result.windows is not None else np.empty((0, self.window, self.n_features), np.float32)
        if len(windows) != len(result.scored):
            raise DataError(f"{len(windows)} window values for {len(result.scored)} scored windows; pass the batch's windows in order")
        events: dict[tuple[str, float], list[Any]] = {}
        for a in result.alerts:
            events.setdefault((a.entity, a.window_end), []).append(a)
        n = 0
        for s, v in zip(result.scored, windows):
            ent = s.entity
            if s.flagged:
                self._streak.setdefault(ent, []).append((s.end_ts, np.asarray(v, np.float32)))
                if len(self._streak[ent]) > 4 * self.window:  # bound: keep the latest part of a long streak
                    self._streak[ent].pop(0)
            for a in events.get((ent, s.end_ts), ()):
                if a.kind == "open":
                    self._open[ent] = a.episode_id if a.reason == "score" else ""
                    if self._open[ent]:
                        self.episodes_ += 1
                elif a.kind == "close":
                    self._open.pop(ent, None)
            ep = self._open.get(ent)
            if ep:
                for t, w in self._streak.pop(ent, []):
                    self.add(ep, t, w)
                    n += 1
                    if added is not None:
                        added.append((ep, t, w))
            elif not s.flagged:
                self._streak.pop(ent, None)
            elif ep == "":
                self._streak.pop(ent, None)
        return n

    def snapshot(self) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.float64]]:
        """(windows (N, W, F), episode ids, end_ts (N,)), oldest first."""
        return self.store_.snapshot()

    def save(self, path: str | Path) -> Path:
        d = self.store_.to_arrays()
        d.update(format=np.asarray(FORMAT), kind=np.asarray("anomaly"), counts=np.asarray([self.episodes_], dtype=np.int64))
        return _save_npz(path, d)

    def load(self, path: str | Path) -> "AnomalyBank":
        d = _load_npz(path, "anomaly")
        self.store_.restore(d)
        self.episodes_ = int(d["counts"][0])
        return self


def stack(rows: Iterable[npt.ArrayLike], window: int, n_features: int) -> npt.NDArray[np.float32]:
    """Windows from nested lists (None = missing) into (N, W, F) float32 with NaN."""
    out = [np.asarray([[np.nan if v is None else v for v in r] for r in w], dtype=np.float32) for w in rows]  # type: ignore[union-attr]
    if not out:
        return np.empty((0, window, n_features), np.float32)
    x = np.stack(out)
    if x.shape[1:] != (window, n_features):
        raise DataError(f"windows have shape {x.shape[1:]}; expected ({window}, {n_features})")
    return x
