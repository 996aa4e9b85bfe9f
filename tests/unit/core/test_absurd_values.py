"""Absurd values alert: a reading far outside anything the model saw, up to the largest a
float32 holds, opens an alert naming its feature; a window the model cannot score (its
likelihood overflows to NaN or infinity) is the most anomalous window there is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamvae.core.bank import ThresholdBank
from streamvae.core.episodes import EpisodeTracker
from streamvae.core.pipeline import Reading, StreamPipeline
from streamvae.model.vae import ScoreOutput
from streamvae.core.windows import WindowAssembler
from helpers import FEATURE_NAMES, make_series

FEATURE = FEATURE_NAMES.index("pressure")
AT = 150  # index of the absurd reading


def pipeline(scorer: Any, warm: np.ndarray, window: int, n_features: int) -> StreamPipeline:
    return StreamPipeline(
        scorer,
        ThresholdBank("spot", {"q": 1e-3}).warm_start(warm),
        EpisodeTracker(open_after=8, close_after=window, update_every=5 * window),
        WindowAssembler(size=window, stride=1, n_features=n_features),
        model_version="test",
    )


def feed(value: float, n: int = 200) -> list[Reading]:
    x = make_series(n, seed=77).astype(np.float32)
    x[AT, FEATURE] = value
    return [Reading("pump-1", float(i), x[i]) for i in range(n)]


@pytest.fixture(scope="module")
def warm(detector: Any, heldout_windows: np.ndarray) -> np.ndarray:
    return np.concatenate([detector.heldout_scores_, detector.score(heldout_windows).score])


def test_a_normal_feed_opens_nothing(detector: Any, warm: np.ndarray) -> None:
    cfg = detector.config
    res = pipeline(detector, warm, cfg.window, cfg.n_features).process(feed(float(make_series(200, seed=77)[AT, FEATURE])))
    assert [a for a in res.alerts if a.kind == "open"] == []


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_magnitude_from_1e3_to_1e38_opens_an_alert_naming_the_feature(detector: Any, warm: np.ndarray, sign: float) -> None:
    cfg = detector.config
    missed = []
    for k in range(3, 39):
        value = sign * 10.0 ** k if k < 38 else sign * 3.0e38
        res = pipeline(detector, warm, cfg.window, cfg.n_features).process(feed(value))
        opens = [a for a in res.alerts if a.kind == "open"]
        if len(opens) != 1 or opens[0].features[0][0] != "pressure":
            missed.append((k, [(a.kind, a.features) for a in res.alerts]))
        flagged = [w for w in res.scored if AT <= w.end_index < AT + cfg.window]
        assert all(w.flagged for w in flagged), (k, [w.score for w in flagged])
    assert missed == []


class Broken:
    """A model whose likelihood overflows on some windows: NaN or -inf for those."""

    names = FEATURE_NAMES

    def __init__(self, bad: set[int], fill: float) -> None:
        self.bad, self.fill, self.calls = bad, fill, 0

    def score(self, x: np.ndarray, detail: bool = True) -> ScoreOutput:
        s = np.where(np.nanmax(np.abs(x), axis=(1, 2)) > 100, self.fill, 1.0)
        shares = np.full((len(x), x.shape[2]), np.nan, np.float32) if detail else None
        return ScoreOutput(s, shares, None)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_a_score_that_is_not_finite_is_flagged_and_not_learned(fill: float) -> None:
    pipe = pipeline(Broken(set(), fill), np.random.default_rng(0).normal(1.0, 0.01, 500), window=16, n_features=3)
    before = pipe.thresholds.get("pump-1")
    res = pipe.process(feed(1e4))
    bad = [w for w in res.scored if AT <= w.end_index < AT + 16]
    assert len(bad) == 16 and all(w.flagged and w.score == np.inf for w in bad)
    opens = [a for a in res.alerts if a.kind == "open"]
    assert len(opens) == 1 and opens[0].features[0] == ("pressure", 1.0)
    assert pipe.thresholds.get("pump-1") == before  # the threshold learned nothing from them
    assert all(w.entity != "pump-1" or not (AT <= w.end_index < AT + 16) for w in res.normal)
