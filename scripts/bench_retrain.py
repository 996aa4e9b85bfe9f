#!/usr/bin/env python
"""Retraining beside live scoring: scoring throughput while a retrain runs in a child
process, and the product's training time against a bare loop of its compiled train step.

Network: W=32, F=8 (input 256) -> 128 -> 64 -> latent 16, mirrored decoder, L=10 samples
when scoring, batch 32 (the VAEConfig default). Data: 50,000 sliding windows of eight
correlated noisy sinusoids (timings do not depend on the values).

1. Scoring alone: ``VAEDetector.score`` on batches of 256 windows, one TensorFlow thread
   (the daemon's path), before and after the retrain; "alone" is their mean.
2. The same while ``train_in_child`` retrains on the 50,000 windows (the daemon's retrain
   worker: a child process, one TensorFlow thread, niceness +10), over the child's whole
   life (start-up, training, threshold scores, save) and over its training alone.
3. retrain_s: ``VAEDetector.fit`` on the 50,000 windows in this process, as the child
   runs it: scaler, 40,000 training and 10,000 validation windows, shuffling, feature
   masking, validation every epoch, threshold scores at the end. patience=20 with
   epochs=20, so early stopping cannot cut it short and all 20 epochs run.
4. bare_train_s: right after, a fresh VAE's compiled ``_train_step`` called from a
   Python loop over all 50,000 windows (pre-made batch tensors, eps drawn once), 20
   epochs, nothing else: no validation, no masking, no shuffling, no scoring.

Prints a table, then one JSON line: scoring_ratio_during_retrain (target >= 0.6),
retrain_s, bare_train_s, retrain_over_bare (target <= 2) and the figures behind them.

    .venv/bin/python scripts/bench_retrain.py [--seconds 5] [--windows 50000] [--epochs 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvae.testing.threads import one_thread  # noqa: E402

one_thread()  # before NumPy and TensorFlow load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from streamvae.core.scaler import Scaler  # noqa: E402
from streamvae.core.windows import sliding_windows  # noqa: E402
from streamvae.model.detector import VAEDetector  # noqa: E402
from streamvae.model.train import TrainResult, train_in_child  # noqa: E402
from streamvae.model.vae import VAE, VAEConfig  # noqa: E402

SCORE_BATCH = 256


def plant_windows(n: int, cfg: VAEConfig, seed: int = 0) -> np.ndarray:
    """(n, W, F) stride-1 windows of F correlated sinusoids with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n + cfg.window - 1)[:, None]
    phase = rng.uniform(0, 2 * np.pi, cfg.n_features)
    series = np.sin(2 * np.pi * t / 50.0 + phase) + 0.1 * rng.standard_normal((len(t), cfg.n_features))
    return sliding_windows(series.astype(np.float32), cfg.window, 1).values.astype(np.float32)


def score_calls(det: VAEDetector, x: np.ndarray, seconds: float | None = None,
                until: threading.Event | None = None) -> list[float]:
    """Call ``det.score(x)`` for ``seconds`` or until ``until`` is set; each call's end time (time.time())."""
    ends = [time.time()]
    t_end = time.perf_counter() + (seconds or 0.0)
    while (until is not None and not until.is_set()) or (until is None and time.perf_counter() < t_end):
        det.score(x)
        ends.append(time.time())
    return ends


def rate(ends: list[float], lo: float | None = None, hi: float | None = None) -> float:
    """Windows per second of the calls that ended in [lo, hi] (default: all of them)."""
    lo = ends[0] if lo is None else lo
    hi = ends[-1] if hi is None else hi
    n = sum(1 for t in ends[1:] if lo < t <= hi)
    return n * SCORE_BATCH / (hi - lo)


def bare_loop(cfg: VAEConfig, flat: np.ndarray, epochs: int) -> float:
    """Seconds for ``epochs`` passes of the compiled train step over ``flat``, nothing else."""
    vae = VAE(cfg)
    bs = cfg.batch_size
    rng = np.random.default_rng(1)
    xs = [tf.constant(flat[i : i + bs]) for i in range(0, len(flat), bs)]
    eps = [tf.constant(rng.standard_normal((len(xb), cfg.latent), dtype=np.float32)) for xb in xs]
    vae._train_step(xs[0], eps[0])  # trace before the clock starts
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, eb in zip(xs, eps):
            vae._train_step(xb, eb)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time of each scoring-alone row")
    ap.add_argument("--windows", type=int, default=50_000, help="training windows")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (all run: patience = epochs)")
    args = ap.parse_args()

    cfg = VAEConfig(window=32, n_features=8, encoder=(128, 64), latent=16, n_samples=10,
                    epochs=args.epochs, patience=max(args.epochs, VAEConfig.patience))
    windows = plant_windows(args.windows, cfg)

    # A scoring detector as the daemon holds one; the cost of scoring does not depend on the weights.
    scorer = VAEDetector(cfg)
    scorer.vae_ = VAE(cfg)
    scorer.scaler_ = Scaler().fit(windows)
    scorer.warmup(SCORE_BATCH)
    batch = windows[:SCORE_BATCH]

    # 1-2. scoring alone, beside the training child, alone again
    before = score_calls(scorer, batch, args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        np.save(Path(tmp) / "windows.npy", windows)
        done = threading.Event()
        box: dict[str, object] = {}

        def retrain() -> None:
            try:
                box["result"] = train_in_child(Path(tmp) / "windows.npy", cfg, Path(tmp) / "model", timeout=3600)
            except BaseException as e:
                box["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=retrain, name="retrain")
        worker.start()
        during = score_calls(scorer, batch, until=done)
        worker.join()
    if "error" in box:
        raise SystemExit(f"the training child failed: {box['error']}")
    child = box["result"]
    assert isinstance(child, TrainResult)
    after = score_calls(scorer, batch, args.seconds)

    alone = (rate(before) + rate(after)) / 2
    during_all = rate(during)
    during_fit = rate(during, child.fit_started, child.fit_ended)

    # 3-4. the product's training against the bare step loop, back to back in this process
    t0 = time.perf_counter()
    det = VAEDetector(cfg).fit(windows)
    retrain_s = time.perf_counter() - t0
    assert det.scaler_ is not None
    flat = det.scaler_.transform(windows).reshape(len(windows), -1)
    bare_s = bare_loop(cfg, flat, args.epochs)
    info = det.fit_info_
    bare_steps = args.epochs * -(-len(flat) // cfg.batch_size)

    print(f"Retraining beside scoring: W={cfg.window} F={cfg.n_features} {cfg.input_dim}->{'->'.join(map(str, cfg.encoder))}->"
          f"{cfg.latent} (decoder mirrored), L={cfg.n_samples}, batch {cfg.batch_size}; {len(windows):,} windows, "
          f"{args.epochs} epochs; one TensorFlow thread per process, training child at nice +10\n")
    print(f"{'scoring, VAEDetector.score, batch ' + str(SCORE_BATCH):<62} {'windows/s':>11} {'seconds':>9}")
    print("-" * 84)
    for name, r, s in (
        ("alone, before the retrain", rate(before), before[-1] - before[0]),
        ("while the child retrains (its whole life)", during_all, during[-1] - during[0]),
        ("while the child trains (VAEDetector.fit only)", during_fit, child.fit_ended - child.fit_started),
        ("alone, after the retrain", rate(after), after[-1] - after[0]),
    ):
        print(f"{name:<62} {r:>11,.0f} {s:>9.1f}")
    print(f"{'scoring ratio during retrain = whole-life rate / mean alone':<62} {during_all / alone:>11.2f}   (target >= 0.6)\n")
    print(f"{'training, ' + str(args.epochs) + ' epochs':<62} {'seconds':>11} {'steps/s':>9}")
    print("-" * 84)
    n_train, n_val = info["n_train"], info["n_val"]
    product_steps = info["epochs_run"] * -(-n_train // cfg.batch_size)
    for name, s, steps in (
        ("child: wall (start-up, fit, save), beside scoring", child.wall_s, None),
        ("child: VAEDetector.fit, beside scoring", child.fit_s, None),
        (f"retrain_s: VAEDetector.fit here ({n_train:,} train + {n_val:,} val)", retrain_s, product_steps),
        (f"bare_train_s: _train_step loop over all {len(flat):,}", bare_s, bare_steps),
    ):
        print(f"{name:<62} {s:>11.2f} {'' if steps is None else f'{steps / s:,.0f}':>9}")
    print(f"{'retrain_s / bare_train_s':<62} {retrain_s / bare_s:>11.2f}   (target <= 2)")
    print(f"epochs run: {info['epochs_run']} (early stopping off: patience {cfg.patience} >= epochs)")
    print(json.dumps({
        "scoring_ratio_during_retrain": round(during_all / alone, 3),
        "scoring_wps_alone": round(alone),
        "scoring_wps_before": round(rate(before)),
        "scoring_wps_after": round(rate(after)),
        "scoring_wps_during_retrain": round(during_all),
        "scoring_wps_during_fit": round(during_fit),
        "scoring_ratio_during_fit": round(during_fit / alone, 3),
        "retrain_s": round(retrain_s, 2),
        "bare_train_s": round(bare_s, 2),
        "retrain_over_bare": round(retrain_s / bare_s, 3),
        "child_wall_s": round(child.wall_s, 2),
        "child_fit_s": round(child.fit_s, 2),
        "windows": len(windows),
        "n_train": n_train,
        "n_val": n_val,
        "epochs": args.epochs,
        "epochs_run": info["epochs_run"],
        "batch_size": cfg.batch_size,
        "score_batch": SCORE_BATCH,
    }))


if __name__ == "__main__":
    main()
