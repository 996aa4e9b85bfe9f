"""Alert episodes: consecutive flagged windows of one entity become ONE episode.

An episode opens after ``open_after`` consecutive flagged windows, sends an ``update``
at most every ``update_every`` seconds while it stays flagged (and only when the peak
score rose), and closes once the entity has been quiet (no flagged window) for
``close_after`` seconds of event time. One JSON alert per transition: a fault that lasts
an hour is three or four alerts, not thousands.

``alert_id`` is a stable hash of (entity, window end, model version, kind), so a
subscriber can drop duplicates and a replay of the same windows produces the same ids.

Examples
--------
>>> ep = EpisodeTracker(open_after=2, close_after=10.0)
>>> kinds = []
>>> for t, flagged in enumerate([0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]):
...     for a in ep.observe("pump-1", float(t), float(t), 5.0 + flagged, 5.5, bool(flagged), (), "v1"):
...         kinds.append((t, a.kind))
>>> kinds
[(2, 'open'), (13, 'close')]
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


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode transition, in the alert schema of ../shared/DESIGN.md."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "kind": self.kind, "entity": self.entity,
            "window_start": self.window_start, "window_end": self.window_end,
            "score": self.score, "threshold": self.threshold, "model_version": self.model_version,
            "features": [{"name": n, "share": round(s, 4)} for n, s in self.features],
            "episode_id": self.episode_id, "detected_at": self.detected_at, "peak_score": self.peak_score,
            "reason": self.reason,
        }


@dataclass(slots=True)
class _State:
    streak: int = 0
    episode_id: str | None = None
    opened_at: float = 0.0
    last_flag_end: float = 0.0
    last_emit: float = 0.0
    peak: float = float("-inf")
    peak_emitted: float = float("-inf")
    first_start: float = 0.0
    top: tuple[tuple[str, float], ...] = field(default=())
    reason: str = "score"


class EpisodeTracker:
    """Per-entity episode state machine (event time: window end timestamps).

    Parameters
    ----------
    open_after : consecutive flagged windows that open an episode (persistence).
    close_after : quiet seconds (no flagged window) after which an open episode closes.
    update_every : minimum seconds between two ``update`` alerts of one episode.
    max_entities : bound on entities with state; idle entities without an open episode
        are evicted first (counted in ``evicted_``).
    """

    def __init__(self, open_after: int = 1, close_after: float = 60.0, update_every: float = 300.0, max_entities: int = 100_000) -> None:
        if not isinstance(open_after, int) or open_after < 1:
            raise ConfigError(f"episodes.open_after must be an int >= 1; got {open_after!r}")
        if not close_after >= 0:
            raise ConfigError(f"episodes.close_after must be seconds >= 0; got {close_after!r}")
        if not update_every > 0:
            raise ConfigError(f"episodes.update_every must be seconds > 0; got {update_every!r}")
        if not isinstance(max_entities, int) or max_entities < 1:
            raise ConfigError(f"episodes.max_entities must be an int >= 1; got {max_entities!r}")
        self.open_after = open_after
        self.close_after = close_after
        self.update_every = update_every
        self.max_entities = max_entities
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

        def alert(kind: str) -> Alert:
            assert st.episode_id is not None
            return Alert(
                stable_id(entity, window_end, model_version, kind), kind, entity, window_start, window_end,
                float(score), threshold, model_version, tuple(features) if flagged else st.top, st.episode_id, now, st.peak,
                st.reason,
            )

        if flagged:
            st.streak += 1
            if st.episode_id is None:
                if st.streak == 1:
                    st.first_start = window_start
                if st.streak < self.open_after:
                    return []
                st.episode_id = stable_id(entity, window_end, model_version)
                st.opened_at = st.last_emit = window_end
                st.last_flag_end = window_end
                st.peak = st.peak_emitted = score
                st.top = tuple(features)
                st.reason = reason
                return [alert("open")]
            st.last_flag_end = window_end
            if score > st.peak:
                st.peak = score
                st.top = tuple(features)
            if window_end - st.last_emit >= self.update_every and st.peak > st.peak_emitted:
                st.last_emit = window_end
                st.peak_emitted = st.peak
                return [alert("update")]
            return []
        st.streak = 0
        if st.episode_id is not None and window_end - st.last_flag_end >= self.close_after:
            a = alert("close")
            del self._state[entity]
            return [a]
        if st.episode_id is None:
            del self._state[entity]
        return []

    def rejudge(self) -> int:
        """A new model serves: an open episode closes at the NEW model's first window of
        its entity if that window is not flagged, instead of after ``close_after`` quiet
        seconds (if it is flagged, the episode goes on under the usual rule). The episodes
        were the old model's judgement; left to run, one opened by a stale model on a new
        operating point stays open for as long as anything flickers, and an open episode
        absorbs every later fault of its entity (measured in the drift test: 8 of 8 pumps
        stuck open after the swap, 0 of 20 faults alerted). Returns how many are open."""
        n = 0
        for st in self._state.values():
            if st.episode_id is not None:
                st.last_flag_end = float("-inf")
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
