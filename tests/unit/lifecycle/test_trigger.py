"""RetrainTrigger and ScoreDrift: reasons, minimum interval, one at a time, drift detectors."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.config import RetrainConfig
from streamvae.lifecycle.trigger import RetrainTrigger, ScoreDrift
from streamvae.errors import ConfigError


def scores(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Right-skewed like -log p of normal windows (Gumbel), optionally shifted."""
    return np.random.default_rng(seed).gumbel(100.0 + shift, 5.0, n)


def test_schedule_and_after_windows_reasons() -> None:
    t = RetrainTrigger(schedule=3600.0, after_windows=0, drift="none", min_interval=0.0, min_windows=10, start=0.0)
    assert t.due(100.0, buffered=50) is None
    assert t.due(3600.0, buffered=50) == "schedule"
    assert t.due(3600.0, buffered=5) is None  # too few buffered windows
    t2 = RetrainTrigger(after_windows=5000, drift="none", min_interval=0.0, min_windows=10)
    t2.windows_added(4999)
    assert t2.due(1.0, 10_000) is None
    t2.windows_added(1)
    assert t2.due(2.0, 10_000) == "after 5000 new windows"


def test_min_interval_and_one_at_a_time() -> None:
    t = RetrainTrigger(after_windows=10, drift="none", min_interval=600.0, min_windows=1)
    t.windows_added(10)
    assert t.due(0.0, 100) is not None
    t.started(0.0)
    assert t.due(10_000.0, 100) is None  # running
    with pytest.raises(RuntimeError):
        t.started(1.0)
    t.finished(50.0, ok=False)  # rejected: the count stays, but the next try waits min_interval
    assert t.due(599.0, 100) is None
    assert t.due(600.0, 100) is None  # ... and new data: the same buffer would be rejected again
    t.windows_added(1)
    assert t.due(600.0, 100) == "after 11 new windows"
    t.started(600.0)
    t.finished(700.0, ok=True)
    assert t.new_windows_ == 0 and t.due(2000.0, 100) is None
    assert t.retrains_ == 1 and t.failures_ == 1


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_drift_fires_on_a_level_shift_and_not_on_a_stationary_stream(kind: str) -> None:
    quiet = ScoreDrift(kind)
    assert not any(quiet.update(float(s)) for s in scores(20_000, seed=1))
    assert quiet.detected_ is None
    d = ScoreDrift(kind)
    stream = np.r_[scores(3000, seed=2), scores(3000, shift=8.0, seed=3)]  # +8 = about 1.3 std of the reference
    fired = [i for i, s in enumerate(stream) if d.update(float(s))]
    assert len(fired) == 1 and 3000 <= fired[0] < 3500, fired
    assert d.detected_ is not None and d.detected_.startswith(f"drift: {kind}")


def test_trigger_reports_drift_and_resets_it_after_a_successful_retrain() -> None:
    t = RetrainTrigger(drift="page_hinkley", min_interval=0.0, min_windows=1)
    t.observe_scores(scores(2000, seed=4))
    assert t.due(1.0, 10) is None
    t.observe_scores(scores(1000, shift=10.0, seed=5))
    reason = t.due(2.0, 10)
    assert reason is not None and reason.startswith("drift: page_hinkley")
    t.started(2.0)
    t.finished(3.0, ok=True)
    assert t.due(4.0, 10) is None  # the new model's scores start a new reference


def test_from_config_and_bad_values() -> None:
    t = RetrainTrigger.from_config(RetrainConfig(schedule=60.0, drift="none", min_interval=0.0, min_windows=100), start=0.0)
    assert t.due(60.0, 100) == "schedule"
    with pytest.raises(ConfigError, match="retrain.drift"):
        RetrainTrigger(drift="cusum")
    with pytest.raises(ConfigError, match="retrain.drift_delta"):
        ScoreDrift("adwin", delta=2.0)


def test_adwin_ignores_falling_scores() -> None:
    """Normal windows scoring LOWER than the reference is no reason to retrain."""
    d = ScoreDrift("adwin")
    stream = np.r_[scores(3000, seed=6), scores(3000, shift=-8.0, seed=7)]
    assert not any(d.update(float(s)) for s in stream)
    assert d.detected_ is None


def test_a_model_that_came_in_behind_the_plant_is_retrained_once_new_windows_come() -> None:
    # the daemon's order: retrain starts, windows keep coming, the model swaps in, the verdict is read
    t = RetrainTrigger(drift="adwin", min_interval=600.0, min_windows=400)
    t.windows_added(1000)
    t.started(0.0)
    t.windows_added(60)
    t.model_swapped(above_own=0.05)
    t.finished(100.0, ok=True)
    assert t.behind_ is not None and t.detector_ is not None and t.detector_.n_ == 0
    assert t.due(599.0, buffered=1060) is None  # min_interval
    assert t.due(600.0, buffered=1060) is None  # 60 windows since it started: too few to learn the plant anew
    t.windows_added(40)
    reason = t.due(600.0, buffered=1100)
    assert reason is not None and reason.startswith("behind the plant: its own threshold let through 5.0%")
    assert "100 windows buffered since the last retrain started" in reason
    t.started(600.0)
    assert t.due(5000.0, 1100) is None  # one at a time
    t.finished(700.0, ok=False)  # rejected: still behind, but not again on the same buffer
    t.windows_added(199)
    assert t.due(1300.0, 1300) is None
    t.windows_added(1)
    assert t.due(1300.0, 1300) is not None
    t.started(1300.0)
    t.model_swapped(above_own=0.004)  # this one knows the plant
    t.finished(1400.0, ok=True)
    t.windows_added(10_000)
    assert t.behind_ is None and t.due(5000.0, 10_000) is None


@pytest.mark.parametrize("share", [0.0, 0.01, float("nan")])
def test_a_model_that_knows_the_plant_or_an_unknown_share_is_not_behind(share: float) -> None:
    t = RetrainTrigger(drift="none", min_interval=0.0, min_windows=10)
    t.model_swapped(above_own=share)
    t.windows_added(10_000)
    assert t.behind_ is None and t.due(1.0, 10_000) is None


def test_behind_survives_a_restart() -> None:
    t = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    t.model_swapped(above_own=0.2)
    t.windows_added(30)
    u = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    u.restore(t.state())
    assert u.behind_ == t.behind_ and u.due(1.0, 500) is None
    u.windows_added(20)
    assert u.due(1.0, 500) == t.behind_ + "; 50 windows buffered since the last retrain started"


def test_a_new_model_whose_first_windows_score_above_its_own_threshold_is_behind() -> None:
    t = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    t.model_swapped(above_own=0.0, own=180.0, watch=1000)  # the recent windows looked fine
    assert t.watching and t.behind_ is None
    t.observe_new_model([170.0] * 500 + [190.0] * 10)  # 10 of 1,000 allowed: 1 %
    assert t.behind_ is None and t.watching
    t.observe_new_model([190.0])
    assert t.behind_ == "behind the plant: its own threshold let through 11 of the first 511 windows it scored"
    assert not t.watching
    t.windows_added(50)
    assert t.due(1.0, 500) == t.behind_ + "; 50 windows buffered since the last retrain started"
    ok = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    ok.model_swapped(above_own=0.0, own=180.0, watch=1000)
    ok.observe_new_model([170.0] * 995 + [190.0] * 5)
    ok.observe_new_model([190.0] * 50)  # after its first 1,000 windows: no longer watched
    assert not ok.watching and ok.behind_ is None
    u = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    u.model_swapped(above_own=0.0, own=180.0, watch=1000)
    u.observe_new_model([190.0] * 5)
    v = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    v.restore(u.state())  # a restart keeps the watch
    v.observe_new_model([190.0] * 6)
    assert v.behind_ is not None
    w = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
    w.model_swapped(above_own=0.0, own=None, watch=1000)  # no threshold of its own: nothing to watch
    assert not w.watching
