"""``VAEDetector``: the scikit-learn style surface over the VAE.

Windows in, raw (unscaled) units: ``X`` is (M, W, F) with NaN for missing readings.

Examples
--------
>>> det = VAEDetector(VAEConfig(window=16, n_features=3, epochs=30))   # doctest: +SKIP
>>> det.fit(train_windows).score_samples(test_windows)                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.rules import SensorRules
from streamvae.core.scaler import Scaler
from streamvae.errors import ConfigError, DataError, NotFittedError
from streamvae.model.fused import CHUNK, FusedScorer, make_scorer
from streamvae.model.kernel import Cells
from streamvae.model.score import GraphScorer
from streamvae.model.vae import VAE, EpochLog, ScoreOutput, VAEConfig

log = logging.getLogger(__name__)

# Windows per scorer call, scaled chunk by chunk: the fused scorer's pass (a bucket of
# the graph's too). A call of 2,000 windows scaled at once made three float64 arrays of
# 4 MB, which service/runtime.bound_heap maps and faults in afresh on every call.
SCORE_CHUNK = CHUNK


def default_threshold(scores: npt.ArrayLike, q: float = 0.999, margin: float = 2.0) -> float:
    """Threshold from a sample of normal scores: ``Q_q + margin * (Q_q - median)``.

    -log p has no natural zero, so "quantile x 4/3" (the SKAB notebooks' rule for errors
    that start at 0) would depend on an arbitrary offset. Stated on the spread above the
    median instead, the rule is unchanged by a shift of the scores and scales with them;
    for scores whose median is 0 it is exactly "quantile x (1 + margin)".
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise DataError("cannot set a threshold from an empty sample of scores")
    hi = float(np.quantile(s, q))
    return hi + margin * (hi - float(np.median(s)))


def score_summary(scores: npt.ArrayLike) -> dict[str, float]:
    """Quantiles, mean and std of a score sample (kept in the artifact)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return {"n": 0}
    qs = {f"q{int(p * 1000):03d}": float(np.quantile(s, p)) for p in (0.5, 0.9, 0.99, 0.999)}
    return {"n": int(len(s)), "mean": float(s.mean()), "std": float(s.std()), "min": float(s.min()), "max": float(s.max()), **qs}


def constant_windows(x: np.ndarray) -> np.ndarray:
    """(F,) True where the stuck-sensor rule (:class:`streamvae.core.pipeline.SensorRules`)
    would call some window (M, W, F) of these normal data stuck."""
    if len(x) == 0:
        return np.zeros(x.shape[2], dtype=bool)
    return np.asarray(SensorRules.stuck_cells(np.asarray(x, dtype=np.float32)).any(axis=0))


class VAEDetector:
    """Windows -> anomaly scores by VAE reconstruction probability.

    Parameters
    ----------
    config : VAEConfig, architecture, training and scoring settings.
    feature_names : names of the F features in model order (default f0..f{F-1}).
    threshold_q, threshold_margin : the default threshold rule (see :func:`default_threshold`).

    Learned state (after :meth:`fit` or :func:`streamvae.model.artifact.load`):
    ``scaler_``, ``vae_``, ``threshold_``, ``train_scores_`` (summary of the scores of the
    fit windows), ``heldout_scores_`` (the validation windows' scores, kept whole so a
    threshold tracker can warm-start from them), ``fit_info_``.
    """

    def __init__(
        self,
        config: VAEConfig | None = None,
        feature_names: Sequence[str] | None = None,
        threshold_q: float = 0.999,
        threshold_margin: float = 2.0,
    ) -> None:
        self.config = config or VAEConfig()
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.threshold_q = threshold_q
        self.threshold_margin = threshold_margin
        self.scaler_: Scaler | None = None
        self.vae_: VAE | None = None
        self.threshold_: float | None = None
        self.train_scores_: dict[str, dict[str, float]] = {}
        self.heldout_scores_: np.ndarray = np.empty(0)
        self.constant_seen_: np.ndarray | None = None  # (F,) a training window held the feature constant
        self.fit_info_: dict[str, Any] = {}
        self.version_: str | None = None
        self._scorer: GraphScorer | None = None
        self._cells_of: tuple[Scaler, Any, Cells] | None = None  # see _cells

    # -- checks -----------------------------------------------------------------
    def _windows(self, X: npt.ArrayLike) -> np.ndarray:
        x = np.asarray(X, dtype=np.float32)
        cfg = self.config
        if x.ndim != 3 or x.shape[1:] != (cfg.window, cfg.n_features):
            raise DataError(
                f"windows must have shape (n, {cfg.window}, {cfg.n_features}) (n, window, features); got {x.shape}"
            )
        return x

    def _fitted(self) -> tuple[Scaler, GraphScorer]:
        if self.scaler_ is None or self.vae_ is None:
            raise NotFittedError("this VAEDetector is not fitted; call fit() or load an artifact")
        if self._scorer is None or self._scorer.vae is not self.vae_:  # the fused scorer holds a copy of the weights
            self._scorer = make_scorer(self.vae_)
        return self.scaler_, self._scorer

    def _cells(self, scaler: Scaler) -> Cells:
        """The scaler per cell of a flattened window, for :meth:`FusedScorer.scores`
        (tiled once per scaler)."""
        cached = self._cells_of
        if cached is None or cached[0] is not scaler or cached[1] is not scaler.mean_:
            w = self.config.window
            cells = (np.tile(np.asarray(scaler.mean_, np.float64), w), np.tile(np.asarray(scaler.scale_, np.float64), w))
            cached = self._cells_of = (scaler, scaler.mean_, cells)
        return cached[2]

    @property
    def names(self) -> list[str]:
        return self.feature_names or [f"f{i}" for i in range(self.config.n_features)]

    # -- training ---------------------------------------------------------------
    def fit(self, X: npt.ArrayLike, scaler: Scaler | None = None,
            init: dict[str, np.ndarray] | None = None,
            on_epoch: Callable[[EpochLog], None] | None = None) -> "VAEDetector":
        """Train on normal windows (M, W, F), in time order.

        The last ``val_fraction`` of the windows is held out for early stopping and for
        the held-out score sample. ``scaler``: use these statistics (e.g. fitted on the
        training rows) instead of fitting on ``X``. ``init``: start from these weights
        (``VAE.get_weights()`` of a model with the same architecture: a warm start for
        retraining) instead of a fresh random initialisation. ``on_epoch``: called with
        each epoch's :class:`~streamvae.model.vae.EpochLog` (a progress display).
        """
        x = self._windows(X)
        cfg = self.config
        if self.feature_names is not None and len(self.feature_names) != cfg.n_features:
            raise ConfigError(f"{len(self.feature_names)} feature names for n_features={cfg.n_features}")
        n_val = max(1, int(round(len(x) * cfg.val_fraction)))
        if len(x) - n_val < 2:
            raise DataError(f"need at least {n_val + 2} training windows of {cfg.window} readings; got {len(x)}")
        self.scaler_ = scaler if scaler is not None else Scaler().fit(x)
        self.constant_seen_ = constant_windows(x)
        flat = self.scaler_.transform(x).reshape(len(x), -1)
        self.vae_ = VAE(cfg)
        if init is not None:
            try:
                self.vae_.set_weights(init)
            except ValueError as e:
                raise ConfigError(f"cannot warm-start: {e}") from None
        self._scorer = None
        self.fit_info_ = self.vae_.fit(flat[:-n_val], flat[-n_val:], log=log, on_epoch=on_epoch)
        self.fit_info_["n_train"] = len(x) - n_val
        self.fit_info_["n_val"] = n_val
        scores = self.score_samples(x)
        self.heldout_scores_ = scores[-n_val:].astype(np.float64)
        self.train_scores_ = {"all": score_summary(scores), "heldout": score_summary(self.heldout_scores_)}
        self.threshold_ = default_threshold(scores, self.threshold_q, self.threshold_margin)
        return self

    # -- scoring ----------------------------------------------------------------
    def score(self, X: npt.ArrayLike, detail: bool = True) -> ScoreOutput:
        """-log reconstruction probability per window (higher = more anomalous), the
        per-feature shares of the NLL, and the plain-MSE ablation score.

        ``detail=False``: the score alone (``shares`` and ``mse`` None), the path the
        pipeline takes for every window; each window's score is the same either way (one
        computation, :class:`~streamvae.model.fused.FusedScorer`)."""
        scaler, scorer = self._fitted()
        x = self._windows(X)
        if len(x) == 0:
            f = self.config.n_features
            return ScoreOutput(np.empty(0), np.empty((0, f), np.float32) if detail else None, np.empty(0) if detail else None)
        if not detail and isinstance(scorer, FusedScorer):  # scaled inside, per chunk
            return ScoreOutput(scorer.scores(x.reshape(len(x), -1), self._cells(scaler)), None, None)
        chunks = (x[i : i + SCORE_CHUNK] for i in range(0, len(x), SCORE_CHUNK))
        parts = [scorer(scaler.transform(c).reshape(len(c), -1), detail) for c in chunks]
        if not detail:
            return ScoreOutput(np.concatenate([p.score for p in parts]), None, None)
        return ScoreOutput(
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.shares for p in parts]),
            np.concatenate([p.mse for p in parts]),
        )

    def score_samples(self, X: npt.ArrayLike) -> np.ndarray:
        """-log reconstruction probability, (M,). HIGHER means MORE anomalous (unlike
        scikit-learn's outlier detectors, whose score_samples point the other way)."""
        return self.score(X, detail=False).score

    def predict(self, X: npt.ArrayLike, threshold: float | None = None) -> np.ndarray:
        """1 where the score exceeds ``threshold`` (default ``threshold_``), else 0."""
        thr = self.threshold_ if threshold is None else threshold
        if thr is None or not math.isfinite(thr):
            raise NotFittedError("no threshold: fit the detector or pass threshold=")
        return (self.score_samples(X) > thr).astype(np.int8)

    def feature_varies(self) -> np.ndarray:
        """(F,) True where a constant window of the feature is a fault (the stuck-sensor
        rule applies): the training data varied (its scale was not floored) and no
        training window held the feature at one exact value (quantised or idle series,
        e.g. a CPU at 0 for hours, do that normally)."""
        scaler, _ = self._fitted()
        floor = np.maximum(scaler.rel_floor * np.maximum(np.abs(scaler.mean_), 1.0), scaler.abs_floor)
        varies = np.asarray(scaler.scale_ > floor * 1.0001)
        if self.constant_seen_ is not None:
            varies &= ~self.constant_seen_
        return varies

    def warmup(self, max_batch: int = SCORE_CHUNK) -> "VAEDetector":
        """Compile the scoring graph for every batch size bucket a live feed can hit, so
        the first polls are not slowed by compilation."""
        self._fitted()[1].warmup(min(max_batch, SCORE_CHUNK))
        return self

    def reconstruct(self, X: npt.ArrayLike) -> np.ndarray:
        """Decoder mean at the posterior mean of z, in raw units, (M, W, F)."""
        scaler, scorer = self._fitted()
        x = self._windows(X)
        flat = scaler.transform(x).reshape(len(x), -1)
        rec = scorer.reconstruct(flat).reshape(x.shape)
        return scaler.inverse_transform(rec)

    def generate(self, n: int, seed: int = 0, noise: bool = False) -> np.ndarray:
        """Draw ``n`` windows from the model: z ~ N(0, I), then the decoder mean (plus
        decoder noise if ``noise``), in raw units, (n, W, F)."""
        import tensorflow as tf

        from streamvae.model.vae import decoder_logvar

        scaler, _ = self._fitted()
        assert self.vae_ is not None
        cfg = self.config
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, cfg.latent)).astype(np.float32)
        mean, raw = self.vae_.decoder(tf.constant(z), training=False)
        out = mean.numpy()
        if noise:
            sd = np.exp(0.5 * decoder_logvar(raw, cfg.min_var).numpy())
            out = out + sd * rng.standard_normal(out.shape).astype(np.float32)
        return scaler.inverse_transform(out.reshape(n, cfg.window, cfg.n_features))
