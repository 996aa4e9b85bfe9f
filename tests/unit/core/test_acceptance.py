"""A change that persists becomes the entity's new normal; a fault that comes back still alerts.

The tiny VAE of conftest (three correlated sinusoids, window 16) scores pump-1's feed.
Episodes open after 3 flagged windows and are due for acceptance after 48 windows (three
window lengths, the default rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from helpers import make_series
from streamvae.core.baseline import Baselines
from streamvae.core.episodes import Alert, EpisodeTracker
from streamvae.core.pipeline import Reading, StreamPipeline
from streamvae.core.bank import ThresholdBank
from streamvae.core.windows import WindowAssembler

ACCEPT_AFTER = 48


def pipeline(detector: Any, warm: np.ndarray, accept_after: int = ACCEPT_AFTER) -> StreamPipeline:
    cfg = detector.config
    return StreamPipeline(
        detector,
        ThresholdBank("spot", {"q": 1e-3}).warm_start(warm),
        EpisodeTracker(open_after=3, close_after=16, update_every=80, accept_after=accept_after),
        WindowAssembler(size=cfg.window, stride=1, n_features=cfg.n_features),
        model_version="test",
        baselines=Baselines(detector.scaler_.mean_, detector.scaler_.scale_),
    )


def feed(pipe: StreamPipeline, x: np.ndarray, batch: int = 37) -> list[Alert]:
    out: list[Alert] = []
    rs = [Reading("pump-1", float(i), x[i].astype(np.float32)) for i in range(len(x))]
    for lo in range(0, len(rs), batch):
        out += pipe.process(rs[lo : lo + batch]).alerts
    return out


@pytest.fixture(scope="module")
def warm(detector: Any, heldout_windows: np.ndarray) -> np.ndarray:
    return np.concatenate([detector.heldout_scores_, detector.score(heldout_windows).score])


def test_a_level_that_persists_is_accepted_and_a_later_fault_still_alerts(detector: Any, warm: np.ndarray) -> None:
    x = make_series(900, seed=21)
    x[300:] += 2.0  # every sensor moves to a new level at 300 and stays there
    x[700:720, 1] += 4.0  # then a fault on pressure
    pipe = pipeline(detector, warm)
    alerts = feed(pipe, x)
    kinds = [(a.kind, a.window_end, a.resolution) for a in alerts]
    opens = [a for a in alerts if a.kind == "open"]
    assert 300 <= opens[0].window_end < 320  # the move alerts
    accepted = [a for a in alerts if a.resolution == "accepted"]
    assert len(accepted) == 1 and accepted[0].episode_id == opens[0].episode_id, kinds
    # it was accepted once it had lasted accept_after windows, not before
    assert opens[0].window_end + ACCEPT_AFTER <= accepted[0].window_end <= opens[0].window_end + 2 * ACCEPT_AFTER
    assert pipe.accepted_ == 1 and "pump-1" in pipe.baselines  # type: ignore[operator]
    centre, _ = pipe.baselines.get("pump-1")  # type: ignore[union-attr, misc]
    assert np.allclose(centre - np.median(x[100:300], axis=0), 2.0, atol=0.5)
    # the new level is quiet: the next episode is the fault, and it names pressure
    later = [a for a in opens if a.window_end > accepted[0].window_end]
    assert [a.window_end for a in later] and 700 <= later[0].window_end < 720, kinds
    assert later[0].features[0][0] == "pressure"
    assert len(later) == 1


def test_without_acceptance_the_move_stays_one_open_episode(detector: Any, warm: np.ndarray) -> None:
    x = make_series(900, seed=21)
    x[300:] += 2.0
    x[700:720, 1] += 4.0
    pipe = pipeline(detector, warm, accept_after=0)
    alerts = feed(pipe, x)
    assert [a.kind for a in alerts if a.kind != "update"] == ["open"]  # the fault at 700 is absorbed
    assert pipe.episodes.is_open("pump-1") and pipe.accepted_ == 0


def test_a_change_that_no_baseline_explains_is_not_accepted(detector: Any, warm: np.ndarray) -> None:
    x = make_series(700, seed=22)
    rng = np.random.default_rng(3)
    x[300:] += 3.0 * rng.standard_normal((400, 3))  # the sensors turn to noise: not a new level
    pipe = pipeline(detector, warm)
    alerts = feed(pipe, x)
    assert [a for a in alerts if a.resolution == "accepted"] == [] and pipe.accepted_ == 0
    assert pipe.episodes.is_open("pump-1")
    assert "pump-1" not in pipe.baselines  # type: ignore[operator]


def test_scores_do_not_depend_on_the_batches_around_an_acceptance(detector: Any, warm: np.ndarray) -> None:
    x = make_series(600, seed=21)
    x[300:] += 2.0
    runs = []
    for batch in (1, 37, 600):
        pipe = pipeline(detector, warm)
        runs.append([(a.kind, a.window_end, a.resolution) for a in feed(pipe, x, batch)])
    assert runs[0] == runs[1] == runs[2]
    assert [r for r in runs[0] if r[2] == "accepted"]


def test_a_new_model_forgets_the_accepted_baselines(detector: Any, warm: np.ndarray) -> None:
    x = make_series(600, seed=21)
    x[300:] += 2.0
    pipe = pipeline(detector, warm)
    feed(pipe, x)
    assert len(pipe.baselines) == 1  # type: ignore[arg-type]
    pipe.swap_model(detector, "test-2", warm)
    assert len(pipe.baselines) == 0  # type: ignore[arg-type]


def test_a_change_the_whole_fleet_shares_is_left_to_retraining(detector: Any, warm: np.ndarray) -> None:
    """Four pumps move together: a new operating point, which a retrain learns; one pump
    moving alone among four is its own change, and is accepted."""
    def run(movers: int) -> StreamPipeline:
        pipe = pipeline(detector, warm)
        series = [make_series(700, seed=30 + k) for k in range(4)]
        for k in range(movers):
            series[k][300:] += 2.0
        rs = [Reading(f"pump-{k}", float(i), series[k][i].astype(np.float32)) for i in range(700) for k in range(4)]
        for lo in range(0, len(rs), 101):
            pipe.process(rs[lo : lo + 101])
        return pipe

    together = run(4)
    assert together.accepted_ == 0 and together.episodes.open_count() == 4
    alone = run(1)
    assert alone.accepted_ == 1 and "pump-0" in alone.baselines  # type: ignore[operator]
