"""Alert episodes: a run of flagged windows is ONE episode (open, a few updates, close).

Time is event time: each window is fed with its end timestamp, one second apart unless
a test says otherwise; ``detected_at`` defaults to the window end.
"""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pytest

from streamvae.core.episodes import Alert, EpisodeTracker, Naming, stable_id
from streamvae.errors import ConfigError

FEATURES = (("pressure", 0.71), ("temp", 0.2))
DESIGN_FIELDS = {
    "alert_id", "kind", "entity", "window_start", "window_end", "score", "threshold",
    "model_version", "features", "episode_id", "detected_at",
}


def feed(ep: EpisodeTracker, entity: str, windows: Iterable[tuple[float, bool, float]], version: str = "v1") -> list[Alert]:
    """Feed (window_end, flagged, score) triples of one entity; windows span 16 s."""
    out: list[Alert] = []
    for end, flagged, score in windows:
        out += ep.observe(entity, end - 15.0, end, score, 5.0, flagged, FEATURES if flagged else (), version)
    return out


def run(ts: Iterable[float], flagged: bool, score: float = 9.0) -> list[tuple[float, bool, float]]:
    return [(float(t), flagged, score) for t in ts]


def test_opens_after_open_after_consecutive_flagged_windows() -> None:
    ep = EpisodeTracker(open_after=3, close_after=60)
    # two flagged, a quiet one (the streak restarts), then three flagged
    seq = run([0, 1], True) + run([2], False) + run([3, 4], True)
    assert feed(ep, "pump-1", seq) == []
    assert not ep.is_open("pump-1")
    [a] = feed(ep, "pump-1", run([5], True))
    assert a.kind == "open" and a.window_end == 5.0 and a.entity == "pump-1"
    assert ep.is_open("pump-1") and ep.open_count() == 1
    assert feed(ep, "pump-1", run([6, 7], True)) == []  # already open: no second open


def test_a_long_fault_is_one_episode_with_bounded_updates() -> None:
    ep = EpisodeTracker(open_after=2, close_after=60, update_every=300)
    # 1,000 flagged windows whose score keeps rising, so every update is due
    seq = [(float(t), True, 10.0 + t) for t in range(1000)]
    alerts = feed(ep, "pump-1", seq)
    alerts += feed(ep, "pump-1", run(range(1000, 1200), False))
    kinds = [a.kind for a in alerts]
    assert kinds.count("open") == 1 and kinds.count("close") == 1
    duration = 999.0 - 1.0
    assert 1 <= kinds.count("update") <= duration // 300.0
    assert kinds[0] == "open" and kinds[-1] == "close"
    assert len({a.episode_id for a in alerts}) == 1
    ups = [a for a in alerts if a.kind == "update"]
    assert all(b.window_end - a.window_end >= 300.0 for a, b in zip([alerts[0], *ups], ups))
    assert not ep.is_open("pump-1")


def test_closes_only_after_close_after_quiet_windows() -> None:
    ep = EpisodeTracker(open_after=1, close_after=30)
    assert [a.kind for a in feed(ep, "pump-1", run(range(5), True))] == ["open"]
    quiet = feed(ep, "pump-1", run(range(5, 34), False))  # last flag at 4: quiet until 33
    assert quiet == [] and ep.is_open("pump-1")
    [close] = feed(ep, "pump-1", run([34], False))  # 30 s after the last flagged window
    assert close.kind == "close" and close.window_end == 34.0
    assert close.features == FEATURES  # the close names what was wrong at the peak
    assert feed(ep, "pump-1", run([35, 36], False)) == []
    assert not ep.is_open("pump-1")


def test_a_flagged_window_in_the_quiet_period_keeps_the_episode_open() -> None:
    ep = EpisodeTracker(open_after=1, close_after=30)
    alerts = feed(ep, "pump-1", run(range(5), True) + run(range(5, 20), False))
    alerts += feed(ep, "pump-1", run([20], True))  # inside the quiet period
    alerts += feed(ep, "pump-1", run(range(21, 50), False))
    assert [a.kind for a in alerts] == ["open"]  # no close at 34, no second open at 20
    assert ep.is_open("pump-1")
    [close] = feed(ep, "pump-1", run([50], False))  # 30 s after the flag at 20
    assert close.kind == "close" and close.episode_id == alerts[0].episode_id


def test_updates_only_when_the_peak_rose() -> None:
    ep = EpisodeTracker(open_after=1, close_after=600, update_every=100)
    alerts = feed(ep, "pump-1", [(0.0, True, 10.0)] + run(range(1, 500), True, 9.0))
    assert [a.kind for a in alerts] == ["open"]  # 500 windows flagged, never above the opening peak
    [up] = feed(ep, "pump-1", [(500.0, True, 11.0)])
    assert up.kind == "update" and up.peak_score == 11.0 and up.score == 11.0
    assert feed(ep, "pump-1", run(range(501, 550), True, 9.0)) == []
    assert feed(ep, "pump-1", [(550.0, True, 12.0)]) == []  # risen, but only 50 windows since the last
    assert feed(ep, "pump-1", run(range(551, 600), True, 9.0)) == []
    [up2] = feed(ep, "pump-1", run([600], True, 9.0))  # 100 windows after the last update
    assert up2.kind == "update" and up2.peak_score == 12.0
    assert feed(ep, "pump-1", run(range(601, 1000), True, 9.0)) == []


def _scenario(ep: EpisodeTracker, entity: str, version: str = "v1") -> list[Alert]:
    seq = [(float(t), True, 10.0 + t) for t in range(700)] + run(range(700, 800), False)
    return feed(ep, entity, seq, version)


def test_alert_ids_are_deterministic_and_distinct() -> None:
    first = _scenario(EpisodeTracker(open_after=2, close_after=60, update_every=300), "pump-1")
    again = _scenario(EpisodeTracker(open_after=2, close_after=60, update_every=300), "pump-1")
    assert [a.kind for a in first] == ["open", "update", "update", "close"]
    assert first == again  # ids, episode ids, everything
    ids = [a.alert_id for a in first]
    assert len(set(ids)) == len(ids)  # open, update and close differ
    other = _scenario(EpisodeTracker(open_after=2, close_after=60, update_every=300), "pump-2")
    assert not set(ids) & {a.alert_id for a in other}
    assert first[0].episode_id != other[0].episode_id
    v2 = _scenario(EpisodeTracker(open_after=2, close_after=60, update_every=300), "pump-1", "v2")
    assert not set(ids) & {a.alert_id for a in v2}
    # the same window can end in an open for one kind and a close for another: kind is in the id
    assert stable_id("pump-1", 5.0, "v1", "open") != stable_id("pump-1", 5.0, "v1", "close")


def test_alert_to_dict_has_the_design_fields() -> None:
    ep = EpisodeTracker(open_after=1, close_after=10)
    [a] = ep.observe("pump-17", 100.0, 115.0, 412.7, 97.3, True, FEATURES, "2026-11-23T07-00-00Z-3f2a", 120.5)
    d = a.to_dict()
    assert DESIGN_FIELDS <= set(d)
    assert d["kind"] == "open" and d["entity"] == "pump-17"
    assert (d["window_start"], d["window_end"], d["score"], d["threshold"]) == (100.0, 115.0, 412.7, 97.3)
    assert d["model_version"] == "2026-11-23T07-00-00Z-3f2a" and d["detected_at"] == 120.5
    assert d["features"] == [{"name": "pressure", "share": 0.71}, {"name": "temp", "share": 0.2}]
    assert isinstance(d["alert_id"], str) and isinstance(d["episode_id"], str)
    assert json.loads(json.dumps(d)) == d


def test_max_entities_evicts_idle_entities_first() -> None:
    ep = EpisodeTracker(open_after=2, close_after=60, max_entities=3)
    feed(ep, "x", run([0, 1], True))  # open
    feed(ep, "y", run([0], True))  # one flagged window, not open yet
    feed(ep, "z", run([0], True))
    feed(ep, "w", run([1], True))  # a fourth entity: y (idle, oldest) goes
    assert ep.evicted_ == 1 and ep.is_open("x")
    assert feed(ep, "y", run([1], True)) == []  # y starts its streak again (z goes now)
    assert ep.evicted_ == 2
    [a] = feed(ep, "y", run([2], True))
    assert a.kind == "open"


def test_max_entities_never_evicts_the_entity_being_observed() -> None:
    ep = EpisodeTracker(open_after=1, close_after=10, max_entities=2)
    feed(ep, "x", run([0], True))
    feed(ep, "y", run([0], True))
    assert ep.open_count() == 2
    alerts = feed(ep, "w", run(range(1, 50), True))  # every other entity has an open episode
    assert [a.kind for a in alerts] == ["open"]  # one episode, not one per window
    assert ep.is_open("w") and ep.evicted_ == 1 and ep.open_count() == 2
    [close] = feed(ep, "w", run(range(50, 60), False))  # the 10th quiet window closes it
    assert close.kind == "close" and close.episode_id == alerts[0].episode_id and close.window_end == 59.0


@pytest.mark.parametrize(
    ("kw", "key"),
    [({"open_after": 0}, "open_after"), ({"close_after": -1}, "close_after"),
     ({"update_every": 0}, "update_every"), ({"max_entities": 0}, "max_entities")],
)
def test_bad_parameters_are_config_errors(kw: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"episodes\.{key}\b"):
        EpisodeTracker(**kw)  # type: ignore[arg-type]


def test_rejudge_closes_an_open_episode_the_new_model_does_not_flag() -> None:
    t = EpisodeTracker(open_after=1, close_after=60)
    for ent in ("p", "q"):
        assert [a.kind for a in t.observe(ent, 0.0, 10.0, 9.0, 5.0, True, (), "v1")] == ["open"]
        assert t.observe(ent, 1.0, 11.0, 1.0, 5.0, False, (), "v1") == []  # quiet, but not for 60 s yet
    assert t.rejudge() == 2
    # p: the new model's first window is not flagged: the old verdict ends now
    assert [a.kind for a in t.observe("p", 2.0, 12.0, 1.0, 5.0, False, (), "v2")] == ["close"]
    # q: the new model flags it too: the episode goes on, and closes by the usual rule
    assert t.observe("q", 2.0, 12.0, 9.0, 5.0, True, (), "v2") == []
    assert t.observe("q", 3.0, 13.0, 1.0, 5.0, False, (), "v2") == [] and t.is_open("q")
    closes = [a for t_ in range(4, 63) for a in t.observe("q", t_ - 10.0, float(t_), 1.0, 5.0, False, (), "v2")]
    assert [(a.kind, a.window_end, a.resolution) for a in closes] == [("close", 62.0, "quiet")]
    assert t.rejudge() == 0


def test_an_episode_is_due_for_acceptance_after_its_windows_and_its_event_time() -> None:
    ep = EpisodeTracker(open_after=1, close_after=10, accept_after=5, accept_min_s=60.0)
    feed(ep, "p", run(range(0, 100, 10), True))  # 10 windows, 10 s apart: 90 s since the open
    assert ep.due("p")
    fast = EpisodeTracker(open_after=1, close_after=10, accept_after=5, accept_min_s=60.0)
    feed(fast, "q", run(range(0, 10), True))  # 10 windows in 9 s: a fault of seconds is not a new normal
    assert not fast.due("q")
    feed(fast, "q", run(range(10, 61), True))
    assert fast.due("q")
    fast.postpone("q")  # asked again only after accept_after more windows
    assert not fast.due("q")
    feed(fast, "q", run(range(61, 66), True))
    assert fast.due("q")
    [close] = [fast.accept("q", 60.0, 66.0, 9.0, 5.0, "v1")]
    assert close is not None and (close.kind, close.resolution) == ("close", "accepted")
    assert not fast.is_open("q") and fast.accept("q", 60.0, 66.0, 9.0, 5.0, "v1") is None
    never = EpisodeTracker(open_after=1, close_after=10, accept_after=0)
    feed(never, "r", run(range(0, 1000), True))
    assert not never.due("r")


@pytest.mark.parametrize("seed", range(6))
def test_naming_names_exactly_the_flags_that_open_or_continue_an_episode(seed: int) -> None:
    # Random verdicts for 3 entities, interleaved, cut into batches (a Naming per batch,
    # as the pipeline makes one per batch), with a model swap (rejudge) between some: a
    # window is named exactly when the tracker, having seen it, has its episode open (it
    # opened it or came while it was open), so an alert never lacks the features it names.
    rng = np.random.default_rng(seed)
    tr = EpisodeTracker(open_after=int(rng.integers(1, 4)), close_after=int(rng.integers(1, 5)), update_every=2)
    naming, t = Naming(tr), 0.0
    for i in range(3000):
        if rng.random() < 0.05:  # a new batch
            naming = Naming(tr)
            if rng.random() < 0.3:
                tr.rejudge()
        entity = f"p{int(rng.integers(3))}"
        flagged = bool(rng.random() < 0.45)
        named = naming.named(entity, flagged)
        t += 1.0
        tr.observe(entity, t - 10, t, 2.0 if flagged else 0.0, 1.0, flagged, FEATURES if named else (), "v1")
        assert named == (flagged and tr.is_open(entity)), (i, entity, flagged)
