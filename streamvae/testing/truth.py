"""Alert episodes against the simulator's ground truth: recall and false episodes per entity-hour.

The score card of ``scripts/demo`` and of the integration tests, in event time, with
W = the window's length in seconds (window x reading interval):

- an injected episode is *caught* if an ``open`` alert of its entity has ``window_end`` in
  ``[start_ts, end_ts + W + MATCH_MARGIN_S]``: the last window that still holds an
  anomalous reading ends at ``end_ts + W - interval``, and the margin allows the episode's
  ``open_after`` persistence and a sensor rule's half-window;
- a *false episode* is an alert episode whose ``open`` alert matches no injected episode,
  counted in every span it is alive in (opened before the span ends, not closed before it
  starts), per entity-hour of normal data: entities x span, minus the time of the injected
  episodes that start in it.

Alerts are the daemon's alert dicts (``kind``, ``entity``, ``episode_id``, ``window_end``);
episodes are the ground truth's (``streamvae simulate --truth``: ``id``, ``entity``,
``kind``, ``start_ts``, ``end_ts``).

Examples
--------
>>> eps = [{"id": "e1", "entity": "p1", "kind": "spike", "start_ts": 100.0, "end_ts": 110.0}]
>>> alerts = [{"kind": "open", "entity": "p1", "episode_id": "a", "window_end": 130.0},
...           {"kind": "open", "entity": "p2", "episode_id": "b", "window_end": 500.0}]
>>> s = score_span(alerts, eps, entities=2, t0=0.0, t1=3600.0, interval=1.0, window_s=60.0)
>>> s.caught, s.recall, len(s.false), round(s.false_per_eh, 3)
(1, 1.0, 1, 0.501)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

MATCH_MARGIN_S = 30.0

Alert = Mapping[str, Any]
Episode = Mapping[str, Any]


def matches(alert: Alert, episodes: Iterable[Episode], window_s: float) -> list[Episode]:
    """The injected episodes an ``open`` alert counts for."""
    t = alert.get("window_end")
    return [e for e in episodes if e["entity"] == alert.get("entity")
            and e["start_ts"] <= t <= e["end_ts"] + window_s + MATCH_MARGIN_S]


@dataclass(frozen=True, slots=True)
class KindScore:
    """One anomaly kind: episodes injected, caught, and each caught one's delay (seconds from
    its start to the ``window_end`` of the first open alert that matches it)."""

    injected: int
    caught: int
    delays: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Score:
    """The score card over one span; ``recall`` is NaN when no episode starts in it."""

    episodes: int
    caught: int
    recall: float
    missed: tuple[Episode, ...]
    false: tuple[Alert, ...]  # the open alert of each false episode
    carried: int  # of ``false``, how many were opened before the span
    false_per_eh: float
    entity_hours: float  # of normal data
    kinds: dict[str, KindScore]


def score_span(alerts: Iterable[Alert], episodes: Sequence[Episode], entities: int, t0: float, t1: float,
               interval: float, window_s: float) -> Score:
    """The score card over the event-time span ``[t0, t1)`` (see the module's rules)."""
    opened: dict[str, Alert] = {}
    closed: dict[str, float] = {}
    for a in alerts:
        if a.get("kind") == "open":
            opened[a["episode_id"]] = a
        elif a.get("kind") == "close":
            closed[a["episode_id"]] = a["window_end"]
    first: dict[str, float] = {}  # episode id -> window_end of the first open alert that matches it
    false = []
    for eid, a in opened.items():
        hit = matches(a, episodes, window_s)
        for e in hit:
            first[e["id"]] = min(first.get(e["id"], float("inf")), a["window_end"])
        if not hit and a["window_end"] < t1 and closed.get(eid, float("inf")) >= t0:
            false.append(a)
    mine = [e for e in episodes if t0 <= e["start_ts"] < t1]
    kinds: dict[str, KindScore] = {}
    for kind in sorted({e["kind"] for e in mine}):
        of = [e for e in mine if e["kind"] == kind]
        delays = tuple(first[e["id"]] - e["start_ts"] for e in of if e["id"] in first)
        kinds[kind] = KindScore(len(of), len(delays), delays)
    anomalous = sum(min(e["end_ts"], t1) - e["start_ts"] + interval for e in mine)
    eh = (entities * (t1 - t0) - anomalous) / 3600.0
    caught = sum(1 for e in mine if e["id"] in first)
    return Score(episodes=len(mine), caught=caught, recall=caught / len(mine) if mine else float("nan"),
                 missed=tuple(e for e in mine if e["id"] not in first), false=tuple(false),
                 carried=sum(1 for a in false if a["window_end"] < t0), false_per_eh=len(false) / eh,
                 entity_hours=eh, kinds=kinds)


class Truth:
    """The simulator's ground-truth file (``streamvae simulate --truth``) and the window length
    ``window`` (in readings) that the matching allows for."""

    def __init__(self, raw: Mapping[str, Any], window: int) -> None:
        self.raw = raw
        feed = raw["feed"]
        self.entities: list[str] = list(feed["entities"])
        self.interval = float(feed["interval"])
        self.duration = float(feed["duration"])
        self.start_ts = float(feed["start_ts"])
        self.episodes: list[Episode] = list(raw["episodes"])
        self.window_s = window * self.interval

    def matches(self, alert: Alert) -> list[Episode]:
        """The injected episodes an ``open`` alert counts for."""
        return matches(alert, self.episodes, self.window_s)

    def score(self, alerts: Iterable[Alert]) -> Score:
        """The score card over the whole feed."""
        return score_span(alerts, self.episodes, len(self.entities), self.start_ts, self.start_ts + self.duration,
                          self.interval, self.window_s)
