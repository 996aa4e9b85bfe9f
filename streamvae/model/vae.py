"""The variational autoencoder of An & Cho (2015) with a Gaussian decoder.

Encoder: x -> q(z|x) = N(mu, diag(exp(logvar))). Decoder: z -> p(x|z) = N(mean, diag(var))
with its own mean AND variance for every input dimension. Training minimises the
negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), with missing cells left out of
the likelihood.

The decoder variance is ``min_var + softplus(raw)``: without a floor it collapses toward
zero on the training windows and normal data that drifts slightly then looks wildly
improbable (../shared/DESIGN.md, "Decoder variance collapse").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from streamvae.errors import ConfigError

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class EpochLog:
    """One finished training epoch, as :meth:`VAE.fit` reports it to ``on_epoch``.

    Losses are the negative ELBO per window (lower is better); ``val_loss`` is the
    held-out one that early stopping watches. ``wait`` epochs have passed without a new
    best; training stops when ``wait`` reaches ``patience`` (``stopping`` is then True)
    or after ``epochs`` epochs.
    """

    epoch: int  # 1-based
    epochs: int  # the most that will run
    loss: float
    val_loss: float
    best_epoch: int  # 1-based: the epoch whose weights are kept
    best_val_loss: float
    wait: int
    patience: int

    @property
    def stopping(self) -> bool:
        return self.wait >= self.patience


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training settings; everything here is stored in the artifact."""

    window: int = 60
    stride: int = 1
    n_features: int = 8
    encoder: tuple[int, ...] = (128, 64)
    latent: int = 16
    decoder: tuple[int, ...] | None = None  # None: the encoder mirrored
    activation: str = "relu"
    min_var: float = 0.5  # in units of the training variance (scaled data)
    decoder_var: str = "z"  # "z": variance is a decoder output; "dim": one learned variance per input dimension
    n_samples: int = 10  # L, samples of z when scoring
    mask_rate: float = 0.1  # share of training windows with one feature hidden (teaches missing data)
    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 20
    val_fraction: float = 0.2
    seed: int = 0
    max_gap: float | None = None
    interval: float | None = None  # seconds between two readings of one entity in the training data (median)

    def __post_init__(self) -> None:
        def bad(key: str, allowed: str) -> ConfigError:
            return ConfigError(f"model.{key} must be {allowed}; got {getattr(self, key)!r}")

        for key in ("window", "n_features", "latent", "n_samples", "epochs", "batch_size"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, "an int >= 1")
        if not isinstance(self.stride, int) or not 1 <= self.stride <= self.window:
            raise bad("stride", f"an int in [1, window={self.window}]")
        for key in ("encoder", "decoder"):
            v = getattr(self, key)
            if key == "decoder" and v is None:
                continue
            if not v or not all(isinstance(u, int) and u >= 1 for u in v):
                raise bad(key, "a non-empty list of ints >= 1")
        if self.activation not in ("relu", "elu", "tanh", "gelu", "swish"):
            raise bad("activation", "one of relu, elu, tanh, gelu, swish")
        if self.decoder_var not in ("z", "dim"):
            raise bad("decoder_var", "'z' (a function of z) or 'dim' (one learned value per input dimension)")
        if not (self.min_var > 0 and math.isfinite(self.min_var)):
            raise bad("min_var", "a positive number")
        if not 0.0 <= self.mask_rate < 1.0:
            raise bad("mask_rate", "a number in [0, 1)")
        if not 0.0 < self.val_fraction < 0.5:
            raise bad("val_fraction", "a number in (0, 0.5)")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "a positive number")
        if self.patience < 1:
            raise bad("patience", "an int >= 1")

    @property
    def input_dim(self) -> int:
        return self.window * self.n_features

    @property
    def decoder_units(self) -> tuple[int, ...]:
        return tuple(self.decoder) if self.decoder is not None else tuple(reversed(self.encoder))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = list(self.encoder)
        d["decoder"] = None if self.decoder is None else list(self.decoder)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model setting(s) {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        for key in ("encoder", "decoder"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# keras ships no type information (no py.typed), so mypy sees Layer as Any and refuses
# a subclass of it under --strict (disallow_subclassing_any).
class PerDimension(keras.layers.Layer):  # type: ignore[misc]
    """A learned vector (one value per input dimension) broadcast over the batch."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: Any) -> None:
        self.value = self.add_weight(shape=(self.units,), initializer="zeros", name="value")

    def call(self, h: tf.Tensor) -> tf.Tensor:
        return tf.zeros_like(h[:, :1]) + self.value[None, :]


def build_networks(cfg: VAEConfig) -> tuple[keras.Model, keras.Model]:
    """Encoder x -> (mu, logvar) and decoder z -> (mean, logvar); plain Dense layers only."""
    d = cfg.input_dim
    x = keras.Input(shape=(2 * d,), name="x_and_mask")
    h = x
    for i, units in enumerate(cfg.encoder):
        h = keras.layers.Dense(units, activation=cfg.activation, name=f"enc_{i}")(h)
    z_mean = keras.layers.Dense(cfg.latent, name="z_mean")(h)
    z_logvar = keras.layers.Dense(cfg.latent, name="z_logvar")(h)
    encoder = keras.Model(x, [z_mean, z_logvar], name="encoder")

    z = keras.Input(shape=(cfg.latent,), name="z")
    h = z
    for i, units in enumerate(cfg.decoder_units):
        h = keras.layers.Dense(units, activation=cfg.activation, name=f"dec_{i}")(h)
    x_mean = keras.layers.Dense(d, name="x_mean")(h)
    if cfg.decoder_var == "z":
        x_var_raw = keras.layers.Dense(d, name="x_var_raw")(h)
    else:
        x_var_raw = PerDimension(d, name="x_var_raw")(h)
    decoder = keras.Model(z, [x_mean, x_var_raw], name="decoder")
    return encoder, decoder


def encoder_input(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(x with NaN -> 0, float mask, encoder input [x0, mask]): the encoder is told which
    cells are missing rather than seeing a fake 0."""
    mask = tf.math.is_finite(x)
    maskf = tf.cast(mask, tf.float32)
    x0 = tf.where(mask, x, tf.zeros_like(x))
    return x0, maskf, tf.concat([x0, maskf], axis=-1)


def decoder_logvar(raw: tf.Tensor, min_var: float) -> tf.Tensor:
    """log(min_var + softplus(raw)): bounded below, so sigma cannot collapse to zero."""
    return tf.math.log(min_var + tf.nn.softplus(raw))


def gaussian_ll(x: tf.Tensor, mean: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + tf.square(x - mean) * tf.exp(-logvar))


class VAE:
    """Encoder + decoder + the negative-ELBO training step (a compiled ``tf.function``)."""

    def __init__(self, cfg: VAEConfig) -> None:
        self.cfg = cfg
        keras.utils.set_random_seed(cfg.seed)
        self.encoder, self.decoder = build_networks(cfg)
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate)
        # Built here, not lazily on the first step, because that step runs inside the
        # epoch graph's while loop, where no variable may be created.
        self.optimizer.build(self.encoder.trainable_weights + self.decoder.trainable_weights)
        spec = [tf.TensorSpec([None, cfg.input_dim], tf.float32), tf.TensorSpec([None, cfg.latent], tf.float32)]
        self._train_step = tf.function(self._step, input_signature=spec)
        self._train_epoch = tf.function(self._epoch, input_signature=spec)
        self._eval_step = tf.function(self._loss_terms, input_signature=spec)

    @property
    def variables(self) -> list[tf.Variable]:
        return list(self.encoder.weights) + list(self.decoder.weights)

    def _loss_terms(self, x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x0, maskf, inp = encoder_input(x)
        mu, lv = self.encoder(inp, training=True)
        z = mu + tf.exp(0.5 * lv) * eps
        xm, raw = self.decoder(z, training=True)
        xlv = decoder_logvar(raw, self.cfg.min_var)
        ll = gaussian_ll(x0, xm, xlv) * maskf
        rec = -tf.reduce_mean(tf.reduce_sum(ll, axis=1))
        kl = tf.reduce_mean(-0.5 * tf.reduce_sum(1.0 + lv - tf.square(mu) - tf.exp(lv), axis=1))
        return rec, kl

    def _step(self, x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            rec, kl = self._loss_terms(x, eps)
            loss = rec + kl
        weights = self.encoder.trainable_weights + self.decoder.trainable_weights
        grads = tape.gradient(loss, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return rec, kl

    def _epoch(self, x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """Train on ``x`` in order, ``batch_size`` rows per step, every step inside this
        one graph; return the batch-size-weighted sums of (reconstruction NLL, KL).

        The same steps as calling ``_train_step`` batch by batch from Python, without a
        Python round trip and a host read of the losses per step. At batch 32 those cost
        more than the step: scripts/bench_retrain.py measured 38 s for this loop's 20
        epochs of 40,000 windows with validation and masking, against 68 s for the bare
        Python loop of ``_train_step`` over 50,000 (the previous per-step loop: 3.4-5.2 s
        per epoch of 40,000 against 1.5-1.8 s now; one thread, loaded 2-core machine).
        """
        bs = self.cfg.batch_size
        total = tf.zeros([2])
        for lo in tf.range(0, tf.shape(x)[0], bs):
            xb = x[lo : lo + bs]
            rec, kl = self._step(xb, eps[lo : lo + bs])
            total += tf.stack([rec, kl]) * tf.cast(tf.shape(xb)[0], tf.float32)
        return total

    def fit(self, x: np.ndarray, x_val: np.ndarray, log: Any = None,
            on_epoch: Callable[[EpochLog], None] | None = None) -> dict[str, Any]:
        """Train on flattened, scaled windows; early stopping on ``x_val``'s negative ELBO.

        Every epoch: a fresh shuffle, a fresh ``mask_rate`` share of windows with one
        feature hidden, fresh eps for every window, all drawn from one seeded generator
        (:meth:`_epoch_inputs`), then one graph call for all the epoch's steps
        (:meth:`_epoch`).
        Returns the history (per-epoch reconstruction NLL and KL, train and validation)
        and the epoch whose weights were kept (they are restored at the end).
        ``on_epoch``: called after every epoch with its :class:`EpochLog` (a progress bar);
        it sees the training and never changes it.
        """
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        x = np.asarray(x, dtype=np.float32)
        x_val_t = tf.constant(np.asarray(x_val, dtype=np.float32))
        val_eps = tf.constant(rng.standard_normal((len(x_val), cfg.latent)).astype(np.float32))
        best = math.inf
        best_weights = [v.numpy() for v in self.variables]
        best_epoch = 0
        history: dict[str, list[float]] = {"rec": [], "kl": [], "val_rec": [], "val_kl": []}
        for epoch in range(cfg.epochs):
            xe, eps = self._epoch_inputs(x, rng)
            rec_sum, kl_sum = self._train_epoch(tf.constant(xe), tf.constant(eps)).numpy()
            vrec, vkl = (float(t) for t in self._eval_step(x_val_t, val_eps))
            history["rec"].append(float(rec_sum) / len(x))
            history["kl"].append(float(kl_sum) / len(x))
            history["val_rec"].append(vrec)
            history["val_kl"].append(vkl)
            val = vrec + vkl
            if val < best - 1e-4 * abs(best if math.isfinite(best) else 1.0):
                best, best_epoch = val, epoch
                best_weights = [v.numpy() for v in self.variables]
            if on_epoch is not None:
                on_epoch(EpochLog(epoch + 1, cfg.epochs, history["rec"][-1] + history["kl"][-1], val, best_epoch + 1,
                                  best, epoch - best_epoch, cfg.patience))
            if epoch - best_epoch >= cfg.patience:
                break
            if log is not None and epoch % 50 == 0:
                log.debug("epoch %d rec=%.2f kl=%.2f val=%.2f", epoch, history["rec"][-1], history["kl"][-1], val)
        for v, w in zip(self.variables, best_weights):
            v.assign(w)
        return {"history": history, "best_epoch": best_epoch, "epochs_run": len(history["rec"]), "best_val_loss": best}

    def _epoch_inputs(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's shuffled, masked windows and eps, drawn from ``rng`` in exactly the
        order of the former per-step loop (permutation; then per batch: eps, the mask
        draw, the hidden features), so a seed trains the same model as before the epoch
        graph existed (the SKAB figures stay reproducible). Only the draws loop in
        Python, ~20 us a batch against ~1.5 ms for the step itself."""
        cfg = self.cfg
        n, bs, f = len(x), cfg.batch_size, cfg.n_features
        xe = x[rng.permutation(n)]
        eps = np.empty((n, cfg.latent), np.float32)
        cols = f * np.arange(cfg.window)
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            eps[lo:hi] = rng.standard_normal((hi - lo, cfg.latent))
            if cfg.mask_rate > 0:
                hit = np.nonzero(rng.random(hi - lo) < cfg.mask_rate)[0]
                if len(hit):
                    feature = rng.integers(0, f, len(hit))
                    xe[lo + hit[:, None], feature[:, None] + cols] = np.nan
        return xe, eps

    def _hide_features(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Hide one whole feature (NaN) in a ``mask_rate`` share of the windows, so the
        model learns to score a window with a dead sensor from the others; the hidden
        cells are left out of the likelihood like any missing cell.

        ``xb`` is overwritten (pass a copy; ``fit`` passes its freshly shuffled copy)."""
        cfg = self.cfg
        if cfg.mask_rate <= 0:
            return xb
        hit = np.nonzero(rng.random(len(xb)) < cfg.mask_rate)[0]
        feature = rng.integers(0, cfg.n_features, len(hit))
        # flat column of (time t, feature f) is t * F + f
        xb[hit[:, None], feature[:, None] + cfg.n_features * np.arange(cfg.window)] = np.nan
        return xb

    def get_weights(self) -> dict[str, np.ndarray]:
        return {_weight_key(v): v.numpy() for v in self.variables}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        expected = {_weight_key(v): v for v in self.variables}
        if set(expected) != set(weights):
            missing = sorted(set(expected) - set(weights))
            extra = sorted(set(weights) - set(expected))
            raise ValueError(f"weights do not match the architecture: missing {missing}, unexpected {extra}")
        for key, v in expected.items():
            w = weights[key]
            if tuple(w.shape) != tuple(v.shape):
                raise ValueError(f"weight {key} has shape {w.shape}; the architecture needs {tuple(v.shape)}")
            v.assign(w)


def _weight_key(v: tf.Variable) -> str:
    path: str = v.path  # keras 3 variable path, e.g. "enc_0/kernel" (keras is untyped)
    return path.replace("/", ".")


@dataclass
class ScoreOutput:
    """Result of scoring a batch of windows.

    score : (B,) -log reconstruction probability (higher = more anomalous); NaN when the
        window has no observed cell.
    shares : (B, F) each feature's share of the window's data-dependent NLL (rows sum to 1);
        None when scored with ``detail=False``.
    mse : (B,) mean squared error of the decoder mean at z = mu (the ablation score); None
        when scored with ``detail=False``.
    """

    score: np.ndarray
    shares: np.ndarray | None
    mse: np.ndarray | None = field(default_factory=lambda: np.empty(0))
