"""One place that turns the configuration and a model into a streaming pipeline.

The daemon, ``streamvae replay``, ``streamvae evaluate`` and the demo all build their
pipeline here, so they run the same detector with the same defaults. Settings left at 0
(or unset) are derived from the model, and stated here:

- ``episodes.close_after = 0``: one window length of windows without a flag;
- ``episodes.update_every = 0``: five window lengths;
- ``episodes.accept_after = 0``: three window lengths (``episodes.accept = false``: never),
  and never less than ``episodes.accept_min_s`` of event time (an hour by default);
- ``records.max_gap`` unset: ``GAP_READINGS`` readings at the interval the model's
  training data were sampled at (no gap rule when the model does not know it).

Derived, not a setting: the thresholds learn a window's score only once the later windows
that share a reading with it came unflagged (``ThresholdBank``'s ``hold``).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.config import Config, EpisodesConfig
from streamvae.core.baseline import Baselines
from streamvae.core.episodes import EpisodeTracker
from streamvae.core.pipeline import StreamPipeline
from streamvae.core.rules import SensorRules
from streamvae.core.scoring import ScoreBatch
from streamvae.core.bank import ThresholdBank
from streamvae.core.windows import WindowAssembler

GAP_READINGS = 30  # a silence this many readings long starts a new window sequence
UPDATE_WINDOWS = 5  # update_every = 0: this many window lengths
# accept_after = 0: this many window lengths. On the 35 nab-dev files (W = 60, SPOT 1e-3,
# scratch runs of the pipeline's logic): 96 windows caught 34-36 of 55 windows, 144-192
# caught 38-40 with 73-85 false episodes, 288 caught 39 with 103 (the choice: README).
ACCEPT_WINDOWS = 3


class Detector(Protocol):
    """What the composition needs from a model (``VAEDetector`` has it all)."""

    version_: str | None
    config: Any  # window, stride, n_features, max_gap, interval
    scaler_: Any  # mean_, scale_ (the training units)
    heldout_scores_: npt.NDArray[np.float64]

    @property
    def names(self) -> Sequence[str]: ...

    def score(self, X: npt.ArrayLike, detail: bool = True) -> ScoreBatch: ...

    def feature_varies(self) -> npt.NDArray[np.bool_]: ...


def episode_windows(e: EpisodesConfig, window: int, stride: int = 1) -> dict[str, int]:
    """The episode settings in windows, with the derived ones filled in.

    >>> episode_windows(EpisodesConfig(), window=60)
    {'open_after': 8, 'close_after': 60, 'update_every': 300, 'accept_after': 180}
    """
    per_length = max(1, window // stride)  # windows in one window length
    return {
        "open_after": e.open_after,
        "close_after": e.close_after or per_length,
        "update_every": e.update_every or UPDATE_WINDOWS * per_length,
        "accept_after": (e.accept_after or ACCEPT_WINDOWS * per_length) if e.accept else 0,
    }


def max_gap(cfg: Config, model_config: Any) -> float | None:
    """Seconds of silence that start a new window sequence (see the module doc)."""
    if cfg.records.max_gap is not None:
        return float(cfg.records.max_gap)
    if getattr(model_config, "max_gap", None) is not None:
        return float(model_config.max_gap)
    interval = getattr(model_config, "interval", None)
    return None if not interval else GAP_READINGS * float(interval)


def build_pipeline(cfg: Config, det: Detector, warm: npt.ArrayLike | None = None) -> StreamPipeline:
    """The streaming pipeline for one model; thresholds warm-started from ``warm`` (by
    default the model's held-out scores)."""
    t = cfg.threshold
    scores = det.heldout_scores_ if warm is None else np.asarray(warm, dtype=np.float64)
    mc = det.config
    # the later windows that share a reading with a window: none of them may be flagged
    # before its score teaches the thresholds (ThresholdBank's hold)
    hold = -(-mc.window // mc.stride) - 1
    bank = ThresholdBank(t.kind, t.tracker_params(), min_history=t.min_history, max_entities=t.max_entities,
                         per_entity=t.per_entity, min_history_s=t.min_history_s, hold=hold).warm_start(scores)
    episodes = EpisodeTracker(**episode_windows(cfg.episodes, mc.window, mc.stride), max_entities=t.max_entities,
                              accept_min_s=cfg.episodes.accept_min_s)
    asm = WindowAssembler(mc.window, mc.stride, mc.n_features, max_gap=max_gap(cfg, mc),
                          max_lateness=cfg.records.max_lateness, max_entities=t.max_entities)
    rules = None
    if cfg.rules.dead_sensor or cfg.rules.stuck_sensor:
        rules = SensorRules(cfg.rules.dead_sensor, cfg.rules.stuck_sensor, varies=det.feature_varies())
    baselines = Baselines(det.scaler_.mean_, det.scaler_.scale_, max_entities=t.max_entities)
    return StreamPipeline(det, bank, episodes, asm, det.version_ or "unversioned", rules=rules, baselines=baselines,
                          fleet_share=cfg.retrain.fleet_share)
