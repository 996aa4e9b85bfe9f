"""The tiny VAE detector: it flags injected anomalies, attributes them, and scores what
its docstrings say it scores.

Rates stated here are for the session detector of tests/conftest.py (3 correlated
sinusoids, noise sd 0.1, window 16, encoder 32-16, latent 4, 40 epochs, seed 7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from helpers import FEATURE_NAMES, WINDOW, make_series, tiny_config
from streamvae.core.windows import sliding_windows
from streamvae.errors import DataError, NotFittedError
from streamvae.model.detector import VAEDetector, default_threshold
from streamvae.model.vae import LOG_2PI, VAE, decoder_logvar

N_INJECT = 40


def _inject(heldout: np.ndarray, kind: str, k: int, seed: int) -> np.ndarray:
    """Copies of N_INJECT random normal windows with one anomaly on feature k.

    spike: one reading +1.5 (15 noise sd, about 2 feature sd); level shift: +0.6 on
    the last half of the window.
    """
    rng = np.random.default_rng(seed)
    x = heldout[rng.choice(len(heldout), N_INJECT, replace=False)].copy()
    if kind == "spike":
        at = rng.integers(2, WINDOW - 2, size=N_INJECT)
        x[np.arange(N_INJECT), at, k] += 1.5
    else:
        x[:, WINDOW // 2 :, k] += 0.6
    return x


@pytest.fixture(scope="module")
def normal_scores(detector: VAEDetector, heldout_windows: np.ndarray) -> np.ndarray:
    s = detector.score_samples(heldout_windows)
    assert s.shape == (len(heldout_windows),) and np.all(np.isfinite(s))
    return s


@pytest.mark.parametrize("k", range(3))
@pytest.mark.parametrize("kind", ["spike", "shift"])
def test_injected_anomalies_score_above_normal(
    detector: VAEDetector, heldout_windows: np.ndarray, normal_scores: np.ndarray, kind: str, k: int
) -> None:
    """Stated rate: 100% of injected windows above the 99th percentile of normal
    held-out scores, and AUC >= 0.99 against all normal held-out windows."""
    bad = detector.score_samples(_inject(heldout_windows, kind, k, seed=10 * k))
    p99 = np.quantile(normal_scores, 0.99)
    assert np.all(bad > p99), f"{kind} on {FEATURE_NAMES[k]}: {np.mean(bad > p99):.0%} above p99={p99:.2f}"
    auc = np.mean(bad[:, None] > normal_scores[None, :])
    assert auc >= 0.99


def test_threshold_flags_few_normal_and_all_big_spikes(
    detector: VAEDetector, heldout_windows: np.ndarray, normal_scores: np.ndarray
) -> None:
    assert detector.threshold_ is not None and math.isfinite(detector.threshold_)
    assert np.mean(detector.predict(heldout_windows)) <= 0.01  # false-alarm rate on unseen normal data
    x = heldout_windows[:20].copy()
    x[:, 8, 1] += 3.0
    assert detector.predict(x).tolist() == [1] * 20


def test_predict_uses_threshold(detector: VAEDetector, heldout_windows: np.ndarray, normal_scores: np.ndarray) -> None:
    x = heldout_windows[:50]
    s = normal_scores[:50]
    p = detector.predict(x)
    assert p.dtype == np.int8
    np.testing.assert_array_equal(p, (s > detector.threshold_).astype(np.int8))
    mid = float(np.median(s))
    np.testing.assert_array_equal(detector.predict(x, threshold=mid), (s > mid).astype(np.int8))
    assert 0 < detector.predict(x, threshold=mid).sum() < 50


def test_threshold_follows_default_rule(detector: VAEDetector, train_series: np.ndarray) -> None:
    scores = detector.score_samples(sliding_windows(train_series, WINDOW, 1).values)
    expected = default_threshold(scores, detector.threshold_q, detector.threshold_margin)
    assert detector.threshold_ == pytest.approx(expected, rel=1e-6)
    hi, med = np.quantile(scores, 0.999), np.median(scores)
    assert detector.threshold_margin == 2.0  # the documented default
    assert expected == pytest.approx(hi + 2.0 * (hi - med), rel=1e-9)
    np.testing.assert_allclose(detector.heldout_scores_, scores[-len(detector.heldout_scores_) :], rtol=1e-6)


@pytest.mark.parametrize("k", range(3))
def test_attribution_points_at_the_spiked_feature(detector: VAEDetector, heldout_windows: np.ndarray, k: int) -> None:
    x = _inject(heldout_windows, "spike", k, seed=100 + k)
    out = detector.score(x)
    assert out.shares.shape == (N_INJECT, 3)
    np.testing.assert_allclose(out.shares.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(out.shares >= 0)
    assert np.all(out.shares.argmax(axis=1) == k)


def test_shares_sum_to_one_on_normal_windows(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    sh = detector.score(heldout_windows[:100]).shares
    np.testing.assert_allclose(sh.sum(axis=1), 1.0, rtol=1e-5)


def test_missing_data(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    x = heldout_windows[:6].copy()
    x[0, :, 2] = np.nan  # one dead sensor
    x[1, 3:7, :] = np.nan  # a short outage
    x[2] = np.nan  # nothing observed
    out = detector.score(x)
    assert np.isfinite(out.score[0]) and np.isfinite(out.score[1])
    assert np.isnan(out.score[2])
    assert np.all(np.isfinite(out.score[3:]))
    # the dead feature gets no share; the others still sum to 1
    assert out.shares[0, 2] == 0.0
    assert out.shares[0].sum() == pytest.approx(1.0, rel=1e-5)


def test_dead_sensor_on_normal_data_is_rarely_flagged(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    for k in range(3):
        x = heldout_windows.copy()
        x[:, :, k] = np.nan
        assert np.mean(detector.predict(x)) <= 0.05, f"dead {FEATURE_NAMES[k]}"


def test_score_is_batch_invariant(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    x = heldout_windows[:64].copy()
    x[5, 10, 0] += 2.0
    x[9, :, 1] = np.nan
    batch = detector.score(x)
    for i in (0, 5, 9, 63):
        alone = detector.score(x[i : i + 1])
        np.testing.assert_allclose(alone.score, batch.score[i : i + 1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(alone.shares, batch.shares[i : i + 1], rtol=1e-4, atol=1e-5)
    # and independent of the order of the batch
    perm = np.random.default_rng(0).permutation(64)
    np.testing.assert_allclose(detector.score_samples(x[perm]), batch.score[perm], rtol=1e-4, atol=1e-4)


def _softplus(a: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, a)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def test_score_is_minus_log_mean_exp(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    """Recompute -log((1/L) sum_l p(x|z_l)) in NumPy from the encoder and decoder."""
    cfg = detector.config
    x = heldout_windows[[0, 17]].copy()
    x = np.concatenate([x, x[:1]])
    x[1, 6, 2] += 1.0  # a spike: the L likelihoods spread out
    x[2, 2:5, 0] = np.nan  # missing cells: rescaled to the full window
    got = detector.score_samples(x)

    scorer = detector._fitted()[1]
    eps = scorer._eps.numpy()[:, 0, :]  # (L, latent), shared by every window
    L = eps.shape[0]
    assert L == cfg.n_samples
    flat = detector.scaler_.transform(x).reshape(len(x), -1).astype(np.float64)
    mask = ~np.isnan(flat)
    x0 = np.where(mask, flat, 0.0)
    mu, lv = (t.numpy().astype(np.float64) for t in detector.vae_.encoder(tf.constant(np.concatenate([x0, mask], axis=1), tf.float32), training=False))
    z = mu[None] + np.exp(0.5 * lv)[None] * eps[:, None, :]  # (L, B, latent)
    xm, raw = detector.vae_.decoder(tf.constant(z.reshape(-1, cfg.latent), tf.float32), training=False)
    xm = xm.numpy().astype(np.float64).reshape(L, len(x), -1)
    xlv = np.log(cfg.min_var + _softplus(raw.numpy().astype(np.float64))).reshape(L, len(x), -1)
    ll = -0.5 * (LOG_2PI + xlv + (x0[None] - xm) ** 2 * np.exp(-xlv)) * mask[None]
    lp = ll.sum(axis=2)  # (L, B)
    d, n_obs = flat.shape[1], mask.sum(axis=1)
    expected = -(_logsumexp(lp, axis=0) - np.log(L)) * d / n_obs
    mean_of_logs = -lp.mean(axis=0) * d / n_obs

    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # the test can tell the two apart: the mean of the logs is larger (Jensen), by more than the tolerance
    assert np.all(mean_of_logs > expected + 1e-2 + 1e-3 * np.abs(expected)), (mean_of_logs, expected)
    assert not np.allclose(got, mean_of_logs, rtol=1e-3, atol=1e-2)


def test_reconstruct_and_generate(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    x = heldout_windows[:30]
    rec = detector.reconstruct(x)
    assert rec.shape == x.shape and np.all(np.isfinite(rec))
    # in raw units and close to the input: better than predicting each feature's mean
    err = np.mean((rec - x) ** 2)
    base = np.mean((x - detector.scaler_.mean_) ** 2)
    assert err < 0.25 * base
    xm = x.copy()
    xm[:, :, 1] = np.nan
    assert np.all(np.isfinite(detector.reconstruct(xm)))

    g = detector.generate(25, seed=3)
    assert g.shape == (25, WINDOW, 3) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, detector.generate(25, seed=3))
    gn = detector.generate(25, seed=3, noise=True)
    assert gn.shape == g.shape and np.all(np.isfinite(gn)) and not np.array_equal(gn, g)
    # generated windows live on the training data's scale
    assert np.all(np.abs(g.mean(axis=(0, 1)) - detector.scaler_.mean_) < 3 * detector.scaler_.scale_)


def test_same_seed_gives_identical_scores(train_series: np.ndarray, heldout_windows: np.ndarray) -> None:
    windows = sliding_windows(train_series[:400], WINDOW, 1).values
    cfg = tiny_config(epochs=3)
    a = VAEDetector(cfg).fit(windows).score_samples(heldout_windows[:50])
    b = VAEDetector(cfg).fit(windows).score_samples(heldout_windows[:50])
    np.testing.assert_array_equal(a, b)
    # and the seed is what makes them equal: another seed starts from other weights
    w7, w8 = VAE(tiny_config(seed=7)).get_weights(), VAE(tiny_config(seed=8)).get_weights()
    assert any(not np.array_equal(w7[k], w8[k]) for k in w7)


def test_decoder_variance_floor(detector: VAEDetector) -> None:
    cfg = detector.config
    raw = tf.constant([-1e4, -100.0, -10.0, 0.0, 10.0, 1e4], tf.float32)
    var = np.exp(decoder_logvar(raw, cfg.min_var).numpy())
    assert np.all(var >= cfg.min_var * (1 - 1e-6)), var
    assert np.all(np.isfinite(var))
    # on the trained decoder too, even far from the data
    z = np.random.default_rng(0).normal(0, 10, size=(200, cfg.latent)).astype(np.float32)
    _, raw = detector.vae_.decoder(tf.constant(z), training=False)
    var = np.exp(decoder_logvar(raw, cfg.min_var).numpy())
    assert var.min() >= cfg.min_var * (1 - 1e-6)


def test_bad_input_and_unfitted() -> None:
    det = VAEDetector(tiny_config())
    with pytest.raises(NotFittedError, match="fit"):
        det.score_samples(np.zeros((2, WINDOW, 3)))
    with pytest.raises(NotFittedError):
        det.predict(np.zeros((2, WINDOW, 3)))
    with pytest.raises(DataError, match=r"\(n, 16, 3\)"):
        det.fit(np.zeros((50, WINDOW, 2)))
    with pytest.raises(DataError, match="at least"):
        det.fit(make_series(WINDOW + 2, seed=0)[None].repeat(2, axis=0)[:, :WINDOW])


def test_empty_batch(detector: VAEDetector) -> None:
    out = detector.score(np.zeros((0, WINDOW, 3)))
    assert out.score.shape == (0,) and out.shares.shape == (0, 3)


def test_the_stuck_rule_is_off_for_a_feature_that_sat_still_in_training() -> None:
    """A CPU idle at 0 for hours, or a reading quantised to a few levels, holds one exact
    value over whole windows in normal operation: the stuck-sensor rule must not fire on
    it (on NAB's flat series it opened 12 false episodes in one file). A feature that
    always carried noise keeps the rule."""
    from streamvae.model.detector import constant_windows

    x = make_series(400, seed=9)
    x[100:160, 0] = 0.25  # feature 0 sits still for 60 readings; feature 1 and 2 never do
    windows = sliding_windows(x, WINDOW, 1).values
    assert constant_windows(windows).tolist() == [True, False, False]
    det = VAEDetector(tiny_config(epochs=3), FEATURE_NAMES).fit(windows)
    assert det.feature_varies().tolist() == [False, True, True]
    half = windows.copy()
    half[:, : WINDOW // 2, 1] = np.nan  # half the readings missing, the rest still noisy
    assert constant_windows(half).tolist() == [True, False, False]
