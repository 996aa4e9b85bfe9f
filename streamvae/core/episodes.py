"""Alert episodes: consecutive flagged windows of one entity become ONE episode.

Every time constant here counts the entity's own windows, never seconds, so the same
setting means the same thing at one reading a second and at one an hour (with stride 1
a window is a reading). An episode opens after ``open_after`` consecutive flagged
windows, sends an ``update`` at most every ``update_every`` windows while it lasts (and
only when the peak score rose), and closes after ``close_after`` consecutive windows
without a flag. One JSON alert per transition: a fault that lasts an hour is three or
four alerts, not thousands.

An episode that lasts ``accept_after`` windows, and at least ``accept_min_s`` seconds of
event time, is *due*: the caller (the pipeline) may
accept the change as the entity's new normal (:meth:`EpisodeTracker.accept`, a ``close``
with ``resolution = "accepted"``) or :meth:`~EpisodeTracker.postpone` the question for
another ``accept_after`` windows.

``alert_id`` is a stable hash of (entity, window end, model version, kind), so a
subscriber can drop duplicates and a replay of the same windows produces the same ids.

Examples
--------
>>> ep = EpisodeTracker(open_after=2, close_after=10)
>>> kinds = []
>>> for t, flagged in enumerate([0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]):
...     for a in ep.observe("pump-1", float(t), float(t), 5.0 + flagged, 5.5, bool(flagged), (), "v1"):
...         kinds.append((t, a.kind, a.resolution))
>>> kinds
[(2, 'open', None), (13, 'close', 'quiet')]
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from streamvae.errors import ConfigError


def stable_id(*parts: object) -> str:
    """A deterministic 20-hex-digit id from the parts."""
    text = "|".join(repr(p) if isinstance(p, float) else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


RESOLUTIONS = ("quiet", "accepted", "rejudged")


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode transition, in the alert schema of ../shared/DESIGN.md.

    ``resolution`` (close alerts only) says why the episode ended: ``quiet`` (no flag for
    ``close_after`` windows), ``accepted`` (the change persisted and became the entity's
    new normal) or ``rejudged`` (a new model does not flag the entity).
    """

    alert_id: str
    kind: str  # open | update | close
    entity: str
    window_start: float
    window_end: float
    score: float
    threshold: float | None
    model_version: str
    features: tuple[tuple[str, float], ...]
    episode_id: str
    detected_at: float
    peak_score: float
    reason: str = "score"  # score | dead_sensor | stuck_sensor: what flagged the episode
    resolution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "alert_id": self.alert_id, "kind": self.kind, "entity": self.entity,
            "window_start": self.window_start, "window_end": self.window_end,
            "score": self.score, "threshold": self.threshold, "model_version": self.model_version,
            "features": [{"name": n, "share": round(s, 4)} for n, s in self.features],
            "episode_id": self.episode_id, "detected_at": self.detected_at, "peak_score": self.peak_score,
            "reason": self.reason,
        }
        if self.resolution is not None:
            d["resolution"] = self.resolution
        return d


OPENS, GOES_ON, CLOSES = "opens", "goes on", "closes"  # what one verdict does to an episode (_State.advance)


@dataclass(slots=True)
class _State:
    streak: int = 0  # consecutive flagged windows
    episode_id: str | None = None
    quiet: int = 0  # consecutive unflagged windows of the open episode
    since_emit: int = 0  # windows since the open or the last update
    lasted: int = 0  # windows since the open (or the last postponed acceptance)
    opened_at: float = 0.0  # event time of the opening window's end
    last_end: float = 0.0  # event time of the latest window's end
    peak: float = float("-inf")
    peak_emitted: float = float("-inf")
    top: tuple[tuple[str, float], ...] = field(default=())
    reason: str = "score"
    rejudge: bool = False

    def advance(self, flagged: bool, open_after: int, close_after: int) -> str:
        """The run counters' move on one verdict, and what it does to the episode: OPENS
        (the ``open_after``-th flag in a row, none open), GOES_ON (a flag while one is
        open), CLOSES (the ``close_after``-th quiet window in a row, or the first after a
        rejudge), or "" (nothing). Opening and closing themselves are the caller's."""
        if flagged:
            self.streak += 1
            if self.episode_id is None:
                return OPENS if self.streak >= open_after else ""
            self.quiet, self.rejudge = 0, False
            return GOES_ON
        self.streak = 0
        if self.episode_id is None:
            return ""
        self.quiet += 1
        return CLOSES if self.rejudge or self.quiet >= close_after else ""


def _count(name: str, v: Any, low: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ConfigError(f"episodes.{name} must be an int >= {low} (windows); got {v!r}")
    return v


class EpisodeTracker:
    """Per-entity episode state machine; every duration counts the entity's windows.

    Parameters
    ----------
    open_after : consecutive flagged windows that open an episode (persistence).
    close_after : consecutive unflagged windows that close an open episode.
    update_every : minimum windows between two ``update`` alerts of one episode.
    accept_after : windows an episode lasts before it is due for acceptance
        (:meth:`due`); 0: never.
    accept_min_s : seconds of event time it must also have lasted (a fault of minutes
        is never a new normal, whatever the sampling rate).
    max_entities : bound on entities with state; idle entities without an open episode
        are evicted first (counted in ``evicted_``).
    """

    def __init__(self, open_after: int = 1, close_after: int = 60, update_every: int = 300, accept_after: int = 0,
                 max_entities: int = 100_000, accept_min_s: float = 0.0) -> None:
        self.open_after = _count("open_after", open_after, 1)
        self.close_after = _count("close_after", close_after, 1)
        self.update_every = _count("update_every", update_every, 1)
        self.accept_after = _count("accept_after", accept_after, 0)
        self.max_entities = _count("max_entities", max_entities, 1)
        if not (isinstance(accept_min_s, (int, float)) and accept_min_s >= 0):
            raise ConfigError(f"episodes.accept_min_s must be seconds >= 0; got {accept_min_s!r}")
        self.accept_min_s = float(accept_min_s)
        self._state: OrderedDict[str, _State] = OrderedDict()
        self.evicted_ = 0

    def is_open(self, entity: str) -> bool:
        st = self._state.get(entity)
        return st is not None and st.episode_id is not None

    def open_count(self) -> int:
        return sum(1 for s in self._state.values() if s.episode_id is not None)

    def observe(
        self,
        entity: str,
        window_start: float,
        window_end: float,
        score: float,
        threshold: float | None,
        flagged: bool,
        features: Sequence[tuple[str, float]],
        model_version: str,
        detected_at: float | None = None,
        reason: str = "score",
    ) -> list[Alert]:
        """Feed one scored window; return the alerts it causes (usually none)."""
        st = self._state.get(entity)
        if st is None:
            if not flagged:
                return []  # nothing to remember for a quiet entity
            st = self._state[entity] = _State()
            self._evict(entity)
        else:
            self._state.move_to_end(entity)
        now = window_end if detected_at is None else detected_at

        def alert(kind: str, resolution: str | None = None) -> Alert:
            assert st.episode_id is not None
            return Alert(
                stable_id(entity, window_end, model_version, kind), kind, entity, window_start, window_end,
                float(score), threshold, model_version, tuple(features) if flagged else st.top, st.episode_id, now, st.peak,
                st.reason, resolution,
            )

        st.last_end = window_end
        if st.episode_id is not None:
            st.lasted += 1
            st.since_emit += 1
        move = st.advance(flagged, self.open_after, self.close_after)
        if move == OPENS:
            st.episode_id = stable_id(entity, window_end, model_version)
            st.quiet = st.since_emit = st.lasted = 0
            st.opened_at = window_end
            st.peak = st.peak_emitted = score
            st.top = tuple(features)
            st.reason = reason
            return [alert("open")]
        if move == GOES_ON:
            if score > st.peak:
                st.peak = score
                st.top = tuple(features)
            if st.since_emit >= self.update_every and st.peak > st.peak_emitted:
                st.since_emit = 0
                st.peak_emitted = st.peak
                return [alert("update")]
            return []
        if move == CLOSES:
            a = alert("close", "rejudged" if st.rejudge else "quiet")
            del self._state[entity]
            return [a]
        if not flagged and st.episode_id is None:  # nothing to remember for a quiet entity
            del self._state[entity]
        return []

    def due(self, entity: str) -> bool:
        """True when the entity's episode has lasted ``accept_after`` windows (see the
        module doc): the change may be accepted as the new normal."""
        st = self._state.get(entity)
        return (self.accept_after > 0 and st is not None and st.episode_id is not None
                and st.lasted >= self.accept_after and st.last_end - st.opened_at >= self.accept_min_s)

    def postpone(self, entity: str) -> None:
        """Not accepted now: ask again after another ``accept_after`` windows."""
        st = self._state.get(entity)
        if st is not None:
            st.lasted = 0

    def accept(self, entity: str, window_start: float, window_end: float, score: float, threshold: float | None,
               model_version: str, detected_at: float | None = None) -> Alert | None:
        """Close the entity's episode: its change is the new normal. Returns the close
        alert (``resolution = "accepted"``), or None when no episode is open."""
        st = self._state.pop(entity, None)
        if st is None or st.episode_id is None:
            return None
        return Alert(stable_id(entity, window_end, model_version, "close"), "close", entity, window_start, window_end,
                     float(score), threshold, model_version, st.top, st.episode_id,
                     window_end if detected_at is None else detected_at, st.peak, st.reason, "accepted")

    def rejudge(self) -> int:
        """A new model serves: an open episode closes at the NEW model's first window of
        its entity if that window is not flagged, instead of after ``close_after`` quiet
        windows (if it is flagged, the episode goes on under the usual rule). The episodes
        were the old model's judgement; left to run, one opened by a stale model on a new
        operating point stays open for as long as anything flickers, and an open episode
        absorbs every later fault of its entity (measured in the drift test: 8 of 8 pumps
        stuck open after the swap, 0 of 20 faults alerted). Returns how many are open."""
        n = 0
        for st in self._state.values():
            if st.episode_id is not None:
                st.rejudge = True
                n += 1
        return n

    def _evict(self, keep: str) -> None:
        # never the entity being observed: its state is in use (evicting it lost the
        # episode it was opening, and every later window opened another one)
        while len(self._state) > self.max_entities:
            for key, s in self._state.items():
                if s.episode_id is None and key != keep:
                    del self._state[key]
                    break
            else:
                self._state.popitem(last=False)
            self.evicted_ += 1

    def forget(self, entity: str) -> None:
        self._state.pop(entity, None)

    def to_state(self) -> dict[str, Any]:
        """Every entity's episode state, JSON-ready, in eviction order (see :meth:`load_state`).

        >>> ep = EpisodeTracker(open_after=1)
        >>> _ = ep.observe("p1", 0.0, 1.0, 9.0, 5.0, True, (("a", 1.0),), "v1")
        >>> copy = EpisodeTracker(open_after=1)
        >>> copy.load_state(ep.to_state())
        >>> copy.to_state() == ep.to_state(), copy.is_open("p1")
        (True, True)
        """
        return {"entities": [[e, _state_dict(s)] for e, s in self._state.items()], "evicted": self.evicted_}

    def load_state(self, d: dict[str, Any]) -> None:
        """Replace the state with :meth:`to_state`'s output."""
        self._state = OrderedDict((str(e), _state_from(s)) for e, s in d["entities"])
        self.evicted_ = int(d.get("evicted", 0))


def _state_dict(s: _State) -> dict[str, Any]:
    # -inf (no peak yet) is not JSON: None stands for it
    inf = float("-inf")
    return {"streak": s.streak, "episode_id": s.episode_id, "quiet": s.quiet, "since_emit": s.since_emit,
            "lasted": s.lasted, "opened_at": s.opened_at, "last_end": s.last_end,
            "peak": None if s.peak == inf else s.peak, "peak_emitted": None if s.peak_emitted == inf else s.peak_emitted,
            "top": [[n, v] for n, v in s.top], "reason": s.reason, "rejudge": s.rejudge}


def _state_from(d: dict[str, Any]) -> _State:
    inf = float("-inf")
    return _State(int(d["streak"]), d["episode_id"], int(d["quiet"]), int(d["since_emit"]), int(d["lasted"]),
                  float(d["opened_at"]), float(d["last_end"]), inf if d["peak"] is None else float(d["peak"]),
                  inf if d["peak_emitted"] is None else float(d["peak_emitted"]),
                  tuple((str(n), float(v)) for n, v in d["top"]), str(d["reason"]), bool(d["rejudge"]))


class Naming:
    """Which flagged windows of a batch an alert may name the features of, decided from
    the verdicts as they come, before the tracker sees them: the window that opens an
    episode (its entity's ``open_after``-th flagged window in a row) and every flagged
    window while one is open (a new peak, an update). A flag that opens nothing (a short
    run, as most flags a threshold raises on normal data) is never named, so the pipeline
    skips its features, a second model call of ~0.5 ms for up to 16 windows. It runs the
    tracker's own rules (``_State.advance``) on a copy of each entity's run counters:
    tests/unit/core/test_episodes.py checks that it names exactly the flags the tracker
    then has open, test_pipeline.py that the alerts are the same as with every flag's
    features. (A state the tracker evicted had no episode: its streak
    lives on here, so a window may be named that did not need to be.)

    >>> n = Naming(EpisodeTracker(open_after=2, close_after=2))
    >>> [n.named("p1", f) for f in (True, False, True, True, False, True, False, False, True)]
    [False, False, False, True, False, True, False, False, False]
    """

    __slots__ = ("tracker", "runs")

    def __init__(self, tracker: EpisodeTracker) -> None:
        self.tracker = tracker
        self.runs: dict[str, _State] = {}  # entity -> streak, open (episode_id), quiet, rejudge as observe keeps them

    def named(self, entity: str, flagged: bool) -> bool:
        """The entity's next verdict, in the batch's order; True: its features may be named."""
        run = self.runs.get(entity)
        if run is None:
            st = self.tracker._state.get(entity)
            run = self.runs[entity] = _State() if st is None else _State(
                st.streak, st.episode_id, st.quiet, rejudge=st.rejudge)
        move = run.advance(flagged, self.tracker.open_after, self.tracker.close_after)
        if move == OPENS:  # as observe opens (any id will do here) and closes (the state goes)
            run.episode_id = "open"
        elif move == CLOSES:
            self.runs[entity] = _State()
        return move in (OPENS, GOES_ON)
