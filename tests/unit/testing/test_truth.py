"""The ground-truth score card (streamvae.testing.truth) that the demo and the drift test report."""

from __future__ import annotations

import math
from typing import Any

from streamvae.testing.truth import MATCH_MARGIN_S, Truth, matches, score_span

W_S = 60.0  # window 60 readings at 1 s


def ep(i: str, entity: str, kind: str, start: float, end: float) -> dict[str, Any]:
    return {"id": i, "entity": entity, "kind": kind, "features": ["a"], "start_ts": start, "end_ts": end}


def alert(kind: str, entity: str, episode: str, end: float) -> dict[str, Any]:
    return {"kind": kind, "entity": entity, "episode_id": episode, "alert_id": f"{episode}-{kind}", "window_end": end}


EPISODES = [ep("s1", "p1", "spike", 600.0, 660.0), ep("s2", "p2", "spike", 1200.0, 1260.0),
            ep("d1", "p1", "drift", 2000.0, 2100.0)]


def truth() -> Truth:
    return Truth({"feed": {"entities": ["p1", "p2", "p3"], "interval": 1.0, "duration": 3600.0, "start_ts": 0.0},
                  "episodes": EPISODES}, window=60)


def test_an_open_alert_counts_up_to_a_window_and_the_margin_after_the_episode() -> None:
    last = 660.0 + W_S + MATCH_MARGIN_S
    assert [e["id"] for e in matches(alert("open", "p1", "x", last), EPISODES, W_S)] == ["s1"]
    assert matches(alert("open", "p1", "x", last + 1), EPISODES, W_S) == []
    assert matches(alert("open", "p1", "x", 599.0), EPISODES, W_S) == []  # before it starts
    assert matches(alert("open", "p2", "x", 620.0), EPISODES, W_S) == []  # another entity


def test_the_whole_feed_card() -> None:
    alerts = [alert("open", "p1", "a", 640.0), alert("close", "p1", "a", 760.0),
              alert("open", "p1", "b", 2130.0),  # d1, 130 s after its start
              alert("open", "p3", "c", 3000.0),  # matches nothing: a false episode
              alert("update", "p3", "c", 3100.0)]
    s = truth().score(alerts)
    assert (s.episodes, s.caught, s.recall) == (3, 2, 2 / 3)
    assert [e["id"] for e in s.missed] == ["s2"]
    assert [a["episode_id"] for a in s.false] == ["c"] and s.carried == 0
    normal_h = (3 * 3600.0 - (61 + 61 + 101)) / 3600.0  # each episode's readings, both ends included
    assert math.isclose(s.entity_hours, normal_h) and math.isclose(s.false_per_eh, 1 / normal_h)
    assert {k: (v.injected, v.caught, v.delays) for k, v in s.kinds.items()} == {
        "drift": (1, 1, (130.0,)), "spike": (2, 1, (40.0,))}


def test_a_delay_is_to_the_first_open_alert_that_matches() -> None:
    alerts = [alert("open", "p1", "late", 700.0), alert("open", "p1", "early", 650.0)]
    assert truth().score(alerts).kinds["spike"].delays == (50.0,)


def test_an_episode_left_open_is_false_in_every_span_it_lives_in() -> None:
    alerts = [alert("open", "p3", "stale", 500.0),  # never closed
              alert("open", "p2", "short", 800.0), alert("close", "p2", "short", 900.0)]
    first = score_span(alerts, EPISODES, 3, 0.0, 1800.0, 1.0, W_S)
    later = score_span(alerts, EPISODES, 3, 1800.0, 3600.0, 1.0, W_S)
    assert [a["episode_id"] for a in first.false] == ["stale", "short"] and first.carried == 0
    assert [a["episode_id"] for a in later.false] == ["stale"] and later.carried == 1
    assert (first.episodes, later.episodes) == (2, 1)  # by start time
    assert math.isclose(later.entity_hours, (3 * 1800.0 - 101) / 3600.0)


def test_no_episode_in_the_span_gives_nan_recall() -> None:
    s = score_span([], EPISODES, 3, 2500.0, 3600.0, 1.0, W_S)
    assert s.episodes == 0 and math.isnan(s.recall) and s.false_per_eh == 0.0


def test_the_whole_feed_card_is_the_span_card_over_the_feed() -> None:
    alerts = [alert("open", "p1", "a", 640.0), alert("open", "p3", "c", 3000.0)]
    assert truth().score(alerts) == score_span(alerts, EPISODES, 3, 0.0, 3600.0, 1.0, W_S)


def test_the_module_examples_run() -> None:
    import doctest

    from streamvae.testing import truth as mod

    assert doctest.testmod(mod).failed == 0
