"""The fused NumPy scorer computes what the TensorFlow graph computes.

Both are checked against a plain float64 NumPy reference written from the Keras weights
and the formula in streamvae/model/score.py's docstring: every cell's log-likelihood,
then log-mean-exp over the L samples. Random windows with missing cells, a window with
none observed, absurd values, and weights that push the fast form of the variance past
exp's range (those windows are redone the exact way). Each fused check runs with both
elementwise tails, the C one (streamvae/model/_tail.c) and NumPy's (``native=False``), and
with the C tail both as one C pass for scores-only calls and inside the NumPy pass.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from helpers import tiny_config
from streamvae.core.scaler import Scaler
from streamvae.model.detector import VAEDetector
from streamvae.model.fused import TAIL, FusedScorer
from streamvae.model.score import ALIGN
from streamvae.model.score import GraphScorer
from streamvae.model.vae import LOG_2PI, VAE, VAEConfig

RTOL = 1e-5  # float32 through the network, float64 in the reference
# FusedScorer's three builds: scores-only calls as one C pass (where the C tail is built
# and NumPy's OpenBLAS found), the NumPy pass with the C tail, the NumPy pass with NumPy's
BUILDS = {"C pass": {"native": True}, "C tail": {"native": True, "whole_pass": False}, "NumPy tail": {"native": False}}


@pytest.fixture(params=list(BUILDS))
def build(request: pytest.FixtureRequest) -> dict[str, bool]:
    """FusedScorer's keyword arguments for one of its builds. Where the C tail is not
    built, the C cases skip; test_tail.py fails instead wherever a C compiler could have
    built it (and wherever the C pass could run but does not)."""
    kwargs = BUILDS[request.param]
    if kwargs["native"] and TAIL is None:
        pytest.skip("streamvae.model._tail is not built (test_tail.py says whether it should be)")
    return kwargs


def reference(vae: VAE, eps: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, shares, mse) in float64, straight from the definition."""
    cfg = vae.cfg
    w = {k: v.astype(np.float64) for k, v in vae.get_weights().items()}

    def dense(h: np.ndarray, name: str) -> np.ndarray:
        return np.maximum(h @ w[f"{name}.kernel"] + w[f"{name}.bias"], 0.0)

    def decode(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for i in range(len(cfg.decoder_units)):
            z = dense(z, f"dec_{i}")
        mean = z @ w["x_mean.kernel"] + w["x_mean.bias"]
        raw = z @ w["x_var_raw.kernel"] + w["x_var_raw.bias"] if cfg.decoder_var == "z" else w["x_var_raw.value"] + 0 * mean
        return mean, cfg.min_var + np.logaddexp(0.0, raw)

    x = x.astype(np.float64)
    mask = np.isfinite(x)
    x0 = np.where(mask, x, 0.0)
    h = np.concatenate([x0, mask], axis=1)
    for i in range(len(cfg.encoder)):
        h = dense(h, f"enc_{i}")
    mu = h @ w["z_mean.kernel"] + w["z_mean.bias"]
    sd = np.exp(0.5 * (h @ w["z_logvar.kernel"] + w["z_logvar.bias"]))
    mean, var = decode(mu[None] + sd[None] * eps[:, None, :])  # (L, B, D)
    half_sq = 0.5 * (x0 - mean) ** 2 / var * mask
    lp = (-0.5 * (LOG_2PI + np.log(var)) * mask - half_sq).sum(axis=2)  # (L, B)
    top = lp.max(axis=0)
    lse = top + np.log(np.exp(lp - top).sum(axis=0))
    n_obs, d, f = mask.sum(axis=1), cfg.input_dim, cfg.n_features
    score = np.where(n_obs > 0, -(lse - np.log(len(eps))) * d / np.maximum(n_obs, 1), np.nan)
    weight = np.exp(lp - lse)  # softmax over the samples
    per_feature = np.einsum("lb,lbd->bd", weight, half_sq).reshape(len(x), d // f, f).sum(axis=1)
    shares = per_feature / np.maximum(per_feature.sum(axis=1, keepdims=True), 1e-12)
    m0, _ = decode(mu)
    mse = ((x0 - m0) ** 2 * mask).sum(axis=1) / np.maximum(n_obs, 1)
    return score, shares, mse


def windows(cfg: VAEConfig, n: int, seed: int) -> np.ndarray:
    """Random scaled windows, some with missing cells, one with none observed."""
    rng = np.random.default_rng(seed)
    x = (1.5 * rng.standard_normal((n, cfg.input_dim))).astype(np.float32)
    x[1, :: cfg.n_features] = np.nan  # a dead sensor
    x[2] = np.nan  # nothing observed: NaN score
    x[3, 5:9] = np.nan  # a gap
    x[rng.random(x.shape) < 0.02] = np.nan  # scattered missing cells
    x[4, 7] = 40.0  # a spike far outside the training data
    return x


CONFIGS = {
    "bench shape": VAEConfig(window=32, n_features=8, encoder=(128, 64), latent=16, n_samples=10),
    "odd dims, L=7": tiny_config(window=15, n_samples=7),  # 45 cells: the products pair an odd count
    "small min_var: exact form": tiny_config(min_var=0.01),
    "one variance per dimension": tiny_config(decoder_var="dim"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_and_graph_match_the_reference(name: str, build: dict[str, bool]) -> None:
    vae = VAE(CONFIGS[name])
    fused, graph = FusedScorer(vae, chunk=16, **build), GraphScorer(vae)
    x = windows(vae.cfg, 40, seed=1)  # 40 windows: chunks of 16, 16 and 8
    assert fused.tail == ("C" if build["native"] else "NumPy")
    want_score, want_shares, want_mse = reference(vae, graph.eps, x)
    assert np.isnan(want_score[2]) and np.isfinite(np.delete(want_score, 2)).all()
    for got in (fused(x), graph(x)):
        assert got.shares is not None and got.mse is not None
        np.testing.assert_allclose(got.score, want_score, rtol=RTOL)
        np.testing.assert_allclose(np.delete(got.shares, 2, axis=0), np.delete(want_shares, 2, axis=0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.mse, want_mse, rtol=RTOL)
    np.testing.assert_array_equal(fused(x, detail=False).score, fused(x).score)  # one computation
    np.testing.assert_allclose(fused.reconstruct(x), graph.reconstruct(x), rtol=1e-5, atol=1e-5)


def test_trained_detector_scores_as_the_reference(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    scorer = detector._fitted()[1]
    assert isinstance(scorer, FusedScorer) and detector.vae_ is not None and detector.scaler_ is not None
    x = heldout_windows[:50].copy()
    x[3, 2:6, 1] = np.nan
    x[7, 10, 0] += 3.0
    flat = detector.scaler_.transform(x).reshape(len(x), -1)
    want, want_shares, _ = reference(detector.vae_, scorer.eps, flat)
    out = detector.score(x)
    assert out.shares is not None
    np.testing.assert_allclose(out.score, want, rtol=RTOL)
    np.testing.assert_allclose(out.shares, want_shares, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(GraphScorer.__call__(scorer, flat).score, out.score, rtol=RTOL)


def test_a_variance_beyond_exps_range_is_redone_exactly(build: dict[str, bool]) -> None:
    vae = VAE(tiny_config())
    w = vae.get_weights()
    w["x_var_raw.bias"] = np.where(np.arange(len(w["x_var_raw.bias"])) % 5 == 0, 120.0, 0.0).astype(np.float32)
    vae.set_weights(w)  # before the scorer is built: it copies the weights
    fused = FusedScorer(vae, **build)
    x = windows(vae.cfg, 20, seed=2)
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.float32(120.0 + vae.cfg.min_var)))  # the fast form's e^(raw + min_var)
    want, want_shares, _ = reference(vae, fused.eps, x)
    got = fused(x)
    assert got.shares is not None
    np.testing.assert_allclose(got.score, want, rtol=RTOL)
    np.testing.assert_allclose(np.delete(got.shares, 2, axis=0), np.delete(want_shares, 2, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(fused(x, detail=False).score, got.score)


def test_lean_and_detailed_scores_are_identical_and_independent_of_the_batch(build: dict[str, bool]) -> None:
    """The same bits for a window in any batch: a window scored again after a restart, in
    a batch of another size, gives the same score, shares and mse, so a repeated alert
    is the same alert (kernel.py's _aligned; before it, 1 in 4 windows scored alone moved
    in its last bit)."""
    vae = VAE(tiny_config())
    fused = FusedScorer(vae, chunk=8, **build)  # rounded up to one 16-window block
    x = windows(vae.cfg, 100, seed=3)
    lean, full = fused(x, detail=False), fused(x)
    assert lean.shares is None and lean.mse is None and full.shares is not None and full.mse is not None
    np.testing.assert_array_equal(lean.score, full.score)  # one computation
    for size in (1, 2, 3, 7, 15, 17, 33, 99):
        parts = [fused(x[i : i + size]) for i in range(0, len(x), size)]
        np.testing.assert_array_equal(np.concatenate([fused(x[i : i + size], detail=False).score
                                                      for i in range(0, len(x), size)]), lean.score)
        np.testing.assert_array_equal(np.concatenate([p.score for p in parts]), lean.score)
        np.testing.assert_array_equal(np.concatenate([p.shares for p in parts]), full.shares)
        np.testing.assert_array_equal(np.concatenate([p.mse for p in parts]), full.mse)
    perm = np.random.default_rng(0).permutation(len(x))
    np.testing.assert_array_equal(fused(x[perm], detail=False).score, lean.score[perm])


def test_the_graph_scores_a_window_the_same_in_any_batch() -> None:
    """The TensorFlow graph (other activations than relu) pads to whole blocks too."""
    vae = VAE(tiny_config(activation="tanh"))
    graph = GraphScorer(vae)
    x = windows(vae.cfg, 100, seed=4)
    full = graph(x)
    for size in (1, 3, 7, 17, 33):
        parts = [graph(x[i : i + size]) for i in range(0, len(x), size)]
        np.testing.assert_array_equal(np.concatenate([p.score for p in parts]), full.score)
        np.testing.assert_array_equal(np.concatenate([p.shares for p in parts]), full.shares)


def test_absurd_windows_agree_with_the_reference_and_the_graph_on_nan(build: dict[str, bool]) -> None:
    vae = VAE(tiny_config())
    fused, graph = FusedScorer(vae, **build), GraphScorer(vae)
    x = windows(vae.cfg, 6, seed=4)
    x[0, 3], x[1, 4], x[3, 0] = 3.0e38, -1.0e20, 1.0e19
    got, nan = fused(x).score, np.isnan(graph(x).score)
    np.testing.assert_array_equal(fused(x, detail=False).score, got)
    with np.errstate(all="ignore"):
        want = reference(vae, graph.eps, x)[0]
    np.testing.assert_array_equal(np.isnan(got), nan)
    # Beyond float32's range the score is inf. (The graph overflows sooner: its -log_mean * D
    # is float32, so it gives inf where the reference gives 1.1e38; the fused scorer does
    # that step in float64, as the reference does.)
    big = ~nan & (np.abs(want) > np.finfo(np.float32).max)
    assert big.any() and np.isposinf(got[big]).all()
    np.testing.assert_allclose(got[~nan & ~big], want[~nan & ~big], rtol=RTOL)


def test_threads_score_with_their_own_work_arrays(build: dict[str, bool]) -> None:
    vae = VAE(tiny_config())
    fused = FusedScorer(vae, chunk=8, **build)
    xs = [windows(vae.cfg, 25, seed=s) for s in range(4)]
    want = [fused(x, detail=False).score for x in xs]
    got: dict[int, list[np.ndarray]] = {}

    def run(i: int) -> None:
        got[i] = [fused(xs[i], detail=False).score for _ in range(20)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        for s in got[i]:
            np.testing.assert_array_equal(s, want[i])


def test_the_detector_rebuilds_its_scorer_for_a_new_network(detector: VAEDetector) -> None:
    clone = VAEDetector(detector.config, detector.names)
    clone.scaler_, clone.vae_ = detector.scaler_, detector.vae_
    first = clone._fitted()[1]
    assert clone._fitted()[1] is first
    clone.vae_ = VAE(detector.config)
    assert clone._fitted()[1] is not first and clone._fitted()[1].vae is clone.vae_


def test_other_activations_are_scored_by_the_graph() -> None:
    cfg = tiny_config(activation="tanh")
    det = VAEDetector(cfg)
    det.vae_ = VAE(cfg)
    det.scaler_ = Scaler().fit(np.random.default_rng(0).standard_normal((50, cfg.n_features)))
    assert type(det._fitted()[1]) is GraphScorer
    with pytest.raises(ValueError, match="relu"):
        FusedScorer(det.vae_)


def test_work_arrays_grow_with_need_up_to_a_chunk(build: dict[str, bool]) -> None:
    """A thread that only ever scores a few windows with detail (flagged ones) or redoes
    a few the exact way keeps small arrays, not a whole chunk's (~22 MB at the bench's
    shape); the scores do not depend on the arrays' size."""
    vae = VAE(tiny_config())
    fused, fresh = FusedScorer(vae, chunk=64, **build), FusedScorer(vae, chunk=64, **build)
    x = windows(vae.cfg, 100, seed=6)
    few = fused(x[:3])
    assert fused._kernel._local.work.chunk == ALIGN  # 3 windows pass as one block (kernel.py's _aligned)
    fused(x)
    assert fused._kernel._local.work.chunk == 64  # at most a chunk
    np.testing.assert_array_equal(few.score, fresh(x[:3]).score)
    np.testing.assert_array_equal(fused(x[:3]).score, few.score)
