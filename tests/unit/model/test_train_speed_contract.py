"""Training fast enough to retrain beside live scoring, without changing what it learns.

The lean loop (one graph call per epoch, no host read per step) must take the same steps
as the plain per-batch loop; retraining runs in a child process whose failures come back
as exceptions, never as a hang. Speed itself is measured by scripts/bench_retrain.py,
never asserted here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from helpers import FEATURE_NAMES, WINDOW, make_series, tiny_config
from streamvae.core.windows import sliding_windows
from streamvae.model import artifact
from streamvae.model.detector import VAEDetector
from streamvae.model.train import TrainingFailed, train_in_child
from streamvae.model.vae import VAE


def _flat(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, WINDOW * len(FEATURE_NAMES))).astype(np.float32)


def test_epoch_graph_takes_the_same_steps_as_the_per_batch_loop() -> None:
    cfg = tiny_config()
    x = _flat(100, seed=0)  # 100 = 3 * 32 + 4: the last batch is short
    x[3, ::3] = np.nan  # a missing feature, as the masking makes them
    eps = np.random.default_rng(1).standard_normal((len(x), cfg.latent)).astype(np.float32)
    graph, loop = VAE(cfg), VAE(cfg)  # same seed: same initial weights

    sums = graph._train_epoch(tf.constant(x), tf.constant(eps)).numpy()
    expected = np.zeros(2)
    for lo in range(0, len(x), cfg.batch_size):
        rec, kl = loop._train_step(tf.constant(x[lo : lo + cfg.batch_size]), tf.constant(eps[lo : lo + cfg.batch_size]))
        expected += np.array([float(rec), float(kl)]) * len(x[lo : lo + cfg.batch_size])

    np.testing.assert_allclose(sums, expected, rtol=1e-5)
    assert int(graph.optimizer.iterations.numpy()) == int(loop.optimizer.iterations.numpy()) == 4
    wg, wl = graph.get_weights(), loop.get_weights()
    for k in wg:
        np.testing.assert_allclose(wg[k], wl[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_fit_makes_one_graph_call_per_epoch_and_no_per_step_call() -> None:
    cfg = tiny_config(epochs=4, patience=100)
    vae = VAE(cfg)
    calls = {"epoch": 0}
    epoch_fn = vae._train_epoch

    def counted(x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        calls["epoch"] += 1
        return epoch_fn(x, eps)

    def forbidden(*args: object) -> None:
        raise AssertionError("fit called the per-step function from Python")

    vae._train_epoch, vae._train_step = counted, forbidden  # type: ignore[method-assign]
    info = vae.fit(_flat(200, seed=2), _flat(50, seed=3))
    assert calls["epoch"] == info["epochs_run"] == 4


def test_fit_restores_the_best_epoch_and_reports_its_loss() -> None:
    cfg = tiny_config(epochs=60, patience=2, learning_rate=3e-2)  # a high rate: validation loss turns up early
    x, x_val = _flat(300, seed=4), _flat(80, seed=5)
    vae = VAE(cfg)
    info = vae.fit(x, x_val)
    h = info["history"]
    val = np.add(h["val_rec"], h["val_kl"])
    assert info["epochs_run"] == len(h["rec"]) <= info["best_epoch"] + cfg.patience + 1
    assert info["best_val_loss"] == pytest.approx(val[info["best_epoch"]])
    # the weights now in the model are the best epoch's: its validation loss again,
    # with the same eps as fit drew (the first draw of its generator)
    val_eps = np.random.default_rng(cfg.seed).standard_normal((len(x_val), cfg.latent)).astype(np.float32)
    rec, kl = vae._eval_step(tf.constant(x_val), tf.constant(val_eps))
    assert float(rec) + float(kl) == pytest.approx(info["best_val_loss"], rel=1e-5)
    assert np.all(np.isfinite(h["rec"])) and np.all(np.isfinite(h["kl"]))


def test_masking_hides_one_whole_feature_in_a_share_of_windows() -> None:
    cfg = tiny_config(mask_rate=0.3)
    x = _flat(2000, seed=6)
    out = VAE(cfg)._hide_features(x.copy(), np.random.default_rng(0))
    cube = np.isnan(out.reshape(len(x), WINDOW, len(FEATURE_NAMES)))
    hit = cube.any(axis=(1, 2))
    assert 0.25 < hit.mean() < 0.35
    # a hit window has exactly one feature missing, over the whole window
    assert np.all(cube[hit].all(axis=1).sum(axis=1) == 1)
    assert np.all(cube[hit].sum(axis=(1, 2)) == WINDOW)


# -- the training child ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return sliding_windows(make_series(300, seed=11), WINDOW, 1).values


def test_child_warm_starts_from_an_artifact_and_returns_a_loadable_one(
    detector: VAEDetector, windows: np.ndarray, tmp_path: Path
) -> None:
    current = artifact.save(detector, tmp_path / "current")
    # a learning rate so small that the warm start shows: the weights barely move
    cfg = tiny_config(learning_rate=1e-9)
    result = train_in_child(windows, cfg, tmp_path / "candidate", feature_names=FEATURE_NAMES,
                            init=current, epochs=2, version="cand-1", timeout=300)
    assert result.path == (tmp_path / "candidate").resolve() and result.version == "cand-1"
    assert result.fit["epochs_run"] == 2 and result.fit_s > 0 and result.wall_s >= result.fit_s
    cand = artifact.load(result.path)
    assert cand.names == FEATURE_NAMES and cand.config.epochs == 2
    assert cand.vae_ is not None and detector.vae_ is not None
    w_new, w_old = cand.vae_.get_weights(), detector.vae_.get_weights()
    for k in w_old:
        np.testing.assert_allclose(w_new[k], w_old[k], atol=1e-6, err_msg=k)
    assert np.all(np.isfinite(cand.score_samples(windows[:20])))


def test_child_error_comes_back_with_its_type_and_message(tmp_path: Path) -> None:
    too_few = sliding_windows(make_series(WINDOW + 1, seed=0), WINDOW, 1).values  # 2 windows
    with pytest.raises(TrainingFailed, match="DataError: need at least") as e:
        train_in_child(too_few, tiny_config(), tmp_path / "m", timeout=300)
    assert e.value.child_error == "DataError" and "Traceback" in e.value.child_traceback
    assert not (tmp_path / "m").exists()


def test_child_past_its_timeout_is_killed(windows: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(TrainingFailed, match="timeout") as e:
        train_in_child(windows, tiny_config(epochs=10_000, patience=10_000), tmp_path / "m", timeout=0.5)
    assert e.value.child_error == "timeout"


def test_stop_kills_the_child(windows: np.ndarray, tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingFailed, match="stopped") as e:
        train_in_child(windows, tiny_config(), tmp_path / "m", stop=stop, timeout=300)
    assert e.value.child_error == "stopped"
