"""Candidate training: a new model on the chosen training windows, judged by the gate.

The only lifecycle module that trains, so the only one that loads TensorFlow (through
:mod:`streamvae.model`, lazily, when a candidate is actually trained). Nothing here
writes to the registry: the caller keeps and promotes only what the gate passed.

The training windows are in time order. Their newest ``holdout`` share is kept out of
training for the gate (recent normal behaviour, never seen by the candidate); the rest
is trained on, and ``VAEDetector.fit`` holds out ITS newest part for early stopping.

Examples
--------
>>> train, held = split_holdout(np.zeros((300, 4, 2), np.float32))
>>> len(train), len(held)
(240, 60)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.errors import DataError
from streamvae.lifecycle.gate import GateReport, validate

if TYPE_CHECKING:  # the real import stays lazy: it loads TensorFlow
    from streamvae.model.detector import VAEDetector
    from streamvae.model.vae import EpochLog, VAEConfig

log = logging.getLogger(__name__)

# settings that change the network's shape or meaning: a warm start needs them all equal
_ARCH = ("window", "stride", "n_features", "encoder", "latent", "decoder", "activation", "min_var", "decoder_var")


def can_warm_start(current: VAEDetector | None, config: VAEConfig | None = None,
                   feature_names: Sequence[str] | None = None) -> bool:
    """True when ``current`` is fitted and has the same features and architecture."""
    if current is None or current.vae_ is None or current.scaler_ is None:
        return False
    if feature_names is not None and list(feature_names) != list(current.names):
        return False
    if config is not None and any(getattr(config, k) != getattr(current.config, k) for k in _ARCH):
        return False
    return True


def train_candidate(current: VAEDetector | None, windows: npt.ArrayLike, epochs: int, seed: int = 0,
                    config: VAEConfig | None = None, feature_names: Sequence[str] | None = None,
                    on_epoch: Callable[[EpochLog], None] | None = None, **overrides: Any) -> VAEDetector:
    """A new detector trained on ``windows`` (N, W, F), in time order.

    Warm start: when ``current`` has the same features and architecture (and ``config``
    / ``feature_names``, if given, agree), the candidate starts from its weights AND its
    scaler, so a few epochs adapt it instead of relearning the plant. Otherwise it trains
    from scratch with ``config`` (or the current model's settings) and a scaler fitted
    on ``windows``. ``overrides``: other VAEConfig settings (e.g. ``patience``);
    ``on_epoch``: each epoch's report, for a progress display.
    """
    from streamvae.model.detector import VAEDetector

    x = np.asarray(windows, dtype=np.float32)
    warm = can_warm_start(current, config, feature_names)
    base = config if config is not None else (current.config if current is not None else None)
    if base is None:
        raise DataError("train_candidate needs a current model or a config")
    cfg = dataclasses.replace(base, epochs=epochs, seed=seed, **overrides)
    names = list(feature_names) if feature_names is not None else (current.names if current is not None else None)
    if current is not None:
        det = VAEDetector(cfg, names, current.threshold_q, current.threshold_margin)
    else:
        det = VAEDetector(cfg, names)
    t0 = time.perf_counter()
    if warm:
        assert current is not None and current.vae_ is not None
        det.fit(x, scaler=current.scaler_, init=current.vae_.get_weights(), on_epoch=on_epoch)
    else:
        det.fit(x, on_epoch=on_epoch)
    det.fit_info_["warm_start"] = warm
    det.fit_info_["train_s"] = round(time.perf_counter() - t0, 3)
    log.info("candidate trained on %d windows (%s) in %.1fs: %d epochs, best %d", len(x),
             "warm start" if warm else "from scratch", det.fit_info_["train_s"], det.fit_info_["epochs_run"],
             det.fit_info_["best_epoch"])
    return det


def split_holdout(windows: npt.NDArray[np.float32], fraction: float = 0.2,
                  minimum: int = 50) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(older part to train on, newest part for the gate)."""
    n_hold = min(len(windows) // 2, max(minimum, int(round(len(windows) * fraction))))
    return windows[: len(windows) - n_hold], windows[len(windows) - n_hold :]


def retrain(current: VAEDetector | None, normals: npt.ArrayLike, anomalies: npt.ArrayLike | None, cfg: Any,
            seed: int = 0, holdout: float = 0.2, entities: Sequence[str] | None = None, config: VAEConfig | None = None,
            feature_names: Sequence[str] | None = None, on_epoch: Callable[[EpochLog], None] | None = None,
            **overrides: Any) -> tuple[VAEDetector, GateReport]:
    """Train a candidate on the older part of ``normals`` and gate it on the newest part.

    ``normals``: the chosen training windows (N, W, F), oldest first;
    ``entities``: their entities (the gate screens per entity); ``anomalies``: windows of
    confirmed alert episodes (may be None); ``cfg``: the ``[retrain]`` settings
    (``epochs``, ``tolerance``, ``min_windows``). Returns the candidate (not saved) and
    the gate's report; promote only if ``report.passed``.
    """
    x = np.asarray(normals, dtype=np.float32)
    if len(x) < cfg.min_windows:
        raise DataError(f"the buffer holds {len(x)} normal windows; retrain.min_windows is {cfg.min_windows}")
    if entities is not None and len(entities) != len(x):
        raise DataError(f"{len(entities)} entities for {len(x)} windows")
    train, held = split_holdout(x, holdout)
    ents = list(entities) if entities is not None else None
    cand = train_candidate(current, train, cfg.epochs, seed=seed, config=config, feature_names=feature_names,
                           on_epoch=on_epoch, **overrides)
    report = validate(current, cand, held, anomalies, tolerance=cfg.tolerance, seed=seed,
                      entities=ents[len(train):] if ents else None, trained=train,
                      trained_entities=ents[: len(train)] if ents else None)
    report.info.update(trained_on=int(len(train)), warm_start=bool(cand.fit_info_.get("warm_start")),
                       epochs_run=int(cand.fit_info_.get("epochs_run", 0)), train_s=cand.fit_info_.get("train_s"))
    return cand, report
