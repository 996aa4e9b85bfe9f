"""Reconstruction-probability scoring: one pass over a batch, no Python loop per window.

score(x) = -log( (1/L) * sum_l p(x | z_l) ),  z_l ~ q(z | x)

computed as ``-(logsumexp_l log p(x|z_l) - log L)``: the log of the MEAN of the L
likelihoods (log-mean-exp), not the mean of their logs, which would be a different,
smaller quantity (Jensen). Higher means more anomalous.

All L samples of a batch's windows go through the decoder as one (L*B, latent) batch
(the fused scorer: of each chunk of windows): no Python loop over windows or samples.

The L standard-normal draws eps_1..eps_L are fixed when the scorer is built (from its
seed) and shared by every window (common random numbers): z_l = mu + sigma * eps_l. A
window's score therefore does not depend on which other windows share its batch, and
replaying a stream gives the same scores as the live daemon did.

Two implementations of the same computation:

- :class:`GraphScorer`: TensorFlow, one ``tf.function`` per batch (optionally XLA). The
  reference, and the scorer for activations other than relu.
- :class:`~streamvae.model.fused.FusedScorer` (its own module): NumPy float32 and
  one-thread BLAS, the decoder's two heads in one matmul, every elementwise pass once
  over cache-sized chunks. What :class:`~streamvae.model.detector.VAEDetector` scores
  with (:func:`~streamvae.model.fused.make_scorer` picks it); its scores equal the
  graph's to float32 rounding (tests/unit/model/test_score_equivalence.py).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from streamvae.model.vae import LOG_2PI, VAE, ScoreOutput, encoder_input

MAX_BUCKET = 4096
# Every scorer computes whole blocks of ALIGN windows (a short batch padded), so that a
# window's score is the same bits in any batch: see streamvae/model/kernel.py's _aligned.
ALIGN = 16


def aligned(n: int) -> int:
    """``n`` windows rounded up to whole blocks of ALIGN.

    >>> aligned(1), aligned(16), aligned(17)
    (16, 16, 32)
    """
    return -(-int(n) // ALIGN) * ALIGN


def bucket(n: int) -> int:
    """The padded batch size for ``n`` windows: the next power of two (at least 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


class GraphScorer:
    """Compiled scorer for one VAE; input is flattened scaled windows (B, W*F), NaN = missing."""

    def __init__(self, vae: VAE, n_samples: int | None = None, seed: int | None = None, jit: bool = False) -> None:
        cfg = vae.cfg
        self.vae = vae
        self.n_samples = int(n_samples or cfg.n_samples)
        seed = cfg.seed if seed is None else seed
        eps = np.random.default_rng(seed + 1_000_003).standard_normal((self.n_samples, 1, cfg.latent))
        self._eps = tf.constant(eps.astype(np.float32))
        self.jit = jit
        spec = [tf.TensorSpec([None, cfg.input_dim], tf.float32)]
        self._full = tf.function(self._score_graph, input_signature=spec, jit_compile=jit)
        self._lean = tf.function(self._score_lean, input_signature=spec, jit_compile=jit)
        self._mean = tf.function(self._decode_mean, input_signature=spec, jit_compile=jit)

    @property
    def eps(self) -> np.ndarray:
        """(L, latent): the fixed standard-normal draws, z_l = mu + sigma * eps_l."""
        eps: np.ndarray = self._eps.numpy()[:, 0, :]
        return eps

    def _log_px(self, x: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """log p(x_obs | z_l) for the L samples, (L, B), and what the extras reuse."""
        cfg = self.vae.cfg
        L, D = self.n_samples, cfg.input_dim
        x0, maskf, inp = encoder_input(x)
        mu, lv = self.vae.encoder(inp, training=False)
        b = tf.shape(x)[0]
        z = tf.reshape(mu[None] + tf.exp(0.5 * lv)[None] * self._eps, (L * b, cfg.latent))
        xm, raw = self.vae.decoder(z, training=False)
        xm = tf.reshape(xm, (L, b, D))
        var = tf.reshape(cfg.min_var + tf.nn.softplus(raw), (L, b, D))  # = exp(decoder_logvar)
        # log N(x; m, var) = -0.5 log(2 pi) - 0.5 log var - sq, with sq = 0.5 (x - m)^2 / var:
        # each elementwise pass over the (L, B, D) tensors is done once (they cost about as
        # much as the matmuls here), and missing cells are zeroed in the difference.
        diff = (x0[None] - xm) * maskf[None]
        sq = 0.5 * tf.square(diff) / var  # (L, B, D), 0 where missing
        log_var_obs = tf.einsum("lbd,bd->lb", tf.math.log(var), maskf)
        n_obs = tf.reduce_sum(maskf, axis=1)
        lp = -0.5 * (LOG_2PI * n_obs[None] + log_var_obs) - tf.reduce_sum(sq, axis=2)  # (L, B) log p(x_obs | z_l)
        return lp, sq, n_obs, x0, maskf, mu

    def _score_of(self, lp: tf.Tensor, n_obs: tf.Tensor) -> tf.Tensor:
        D = self.vae.cfg.input_dim
        log_mean = tf.reduce_logsumexp(lp, axis=0) - math.log(self.n_samples)
        # Rescale to the full window's dimension count so a window with a dead sensor
        # stays on the threshold's scale (equal to -log p when nothing is missing).
        return tf.where(n_obs > 0, -log_mean * D / tf.maximum(n_obs, 1.0), np.nan)

    def _score_lean(self, x: tf.Tensor) -> tf.Tensor:
        lp, _, n_obs, _, _, _ = self._log_px(x)
        return self._score_of(lp, n_obs)

    def _score_graph(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        cfg = self.vae.cfg
        D, F = cfg.input_dim, cfg.n_features
        lp, sq, n_obs, x0, maskf, mu = self._log_px(x)
        score = self._score_of(lp, n_obs)
        b = tf.shape(x)[0]
        # Attribution: the data-dependent part of each cell's NLL, 0.5 * ((x - mean) / sigma)^2,
        # averaged over samples with their posterior weights softmax_l(log p(x|z_l)). The
        # constant part (log sigma) has no natural zero, so it is left out of the shares.
        w = tf.nn.softmax(lp, axis=0)
        cell = tf.einsum("lb,lbd->bd", w, sq)  # (B, D)
        per_feature = tf.reduce_sum(tf.reshape(cell, (b, D // F, F)), axis=1)
        shares = per_feature / tf.maximum(tf.reduce_sum(per_feature, axis=1, keepdims=True), 1e-12)
        # Ablation: plain MSE of the decoder mean at the posterior mean.
        m0, _ = self.vae.decoder(mu, training=False)
        mse = tf.reduce_sum(tf.square(x0 - m0) * maskf, axis=1) / tf.maximum(n_obs, 1.0)
        return score, shares, mse

    def _decode_mean(self, x: tf.Tensor) -> tf.Tensor:
        _, _, inp = encoder_input(x)
        mu, _ = self.vae.encoder(inp, training=False)
        m, _ = self.vae.decoder(mu, training=False)
        return m

    def __call__(self, x: np.ndarray, detail: bool = True) -> ScoreOutput:
        """Score flattened scaled windows (B, W*F); one graph call.

        ``detail=False`` computes the score alone (``shares`` and ``mse`` are None): the
        attribution pass and the ablation's extra decoder pass cost ~10-15% of a call,
        and a live feed needs the shares of its flagged windows only.

        The batch is padded (NaN rows) up to a multiple of ALIGN windows, as the fused
        scorer pads it: TensorFlow's matmul too rounds a row's last bit by the batch's
        size, and the padding makes a window's score the same bits in any batch. With
        ``jit`` (XLA) it is padded up to the next power of two (at least ALIGN): an XLA
        graph is specialised to its batch size, and a live feed's poll sizes vary, so
        without the padding every new size would compile anew (~0.5-1.3 s each). Each
        size is compiled on its own, so under XLA a window's last bit still moves between
        sizes (1 in 8 windows, 16 against 256). The plain graph takes any batch size with
        one trace.
        """
        b = len(x)
        size = max(bucket(b), ALIGN) if self.jit else aligned(b)
        if size != b:
            pad = np.full((size - b, x.shape[1]), np.nan, dtype=np.float32)
            x = np.concatenate([np.asarray(x, dtype=np.float32), pad])
        if not detail:
            s = self._lean(tf.convert_to_tensor(x, tf.float32))
            return ScoreOutput(s.numpy()[:b].astype(np.float64), None, None)
        s, sh, mse = self._full(tf.convert_to_tensor(x, tf.float32))
        return ScoreOutput(s.numpy()[:b].astype(np.float64), sh.numpy()[:b], mse.numpy()[:b].astype(np.float64))

    def warmup(self, max_batch: int = 4096) -> None:
        """Trace (and with ``jit`` compile every batch bucket up to ``max_batch``)."""
        d = self.vae.cfg.input_dim
        if not self.jit:
            self._full(tf.zeros((1, d), tf.float32))
            self._lean(tf.zeros((1, d), tf.float32))
            return
        size = ALIGN
        while size <= max(bucket(max_batch), ALIGN):
            self._full(tf.zeros((size, d), tf.float32))
            self._lean(tf.zeros((size, d), tf.float32))
            size *= 2

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder mean at z = E[q(z|x)], in scaled units (B, W*F)."""
        mean: np.ndarray = self._mean(tf.convert_to_tensor(x, tf.float32)).numpy()
        return mean
