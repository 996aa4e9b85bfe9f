#!/usr/bin/env python
"""Scoring throughput of the VAE through the daemon's scoring path, against the
machine's one-thread float32 matmul peak measured in the same run.

Network: W=32, F=8 (input 256) -> 128 -> 64 -> latent 16, mirrored decoder with mean and
log-variance heads; L=10 samples of z per window. Path: ``VAEDetector.score`` (scaling,
one tf.function graph call per batch, NumPy out), one TensorFlow thread.

Prints a table, then one JSON line: windows_per_s (batch 256, L=10), model_gflops,
peak_gflops, ratio, p99_ms_batch1, and the per-batch figures.

    .venv/bin/python scripts/bench_model.py [--seconds 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvae.testing.threads import one_thread  # noqa: E402

one_thread()  # before NumPy and TensorFlow load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from streamvae.core.scaler import Scaler  # noqa: E402
from streamvae.model.detector import VAEDetector  # noqa: E402
from streamvae.model.score import GraphScorer  # noqa: E402
from streamvae.model.vae import VAE, VAEConfig  # noqa: E402


def matmul_peak(seconds: float) -> float:
    """GFLOP/s of a float32 2048x2048 NumPy matmul on one thread (best of repeated runs)."""
    n = 2048
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_flops(cfg: VAEConfig) -> float:
    """Matmul FLOPs to score one window: encoder once, decoder (both heads) L times, and
    the decoder at the posterior mean once for the MSE ablation."""
    d, k = cfg.input_dim, cfg.latent
    enc = [2 * d, *cfg.encoder]  # the encoder reads the window and its missing-cell mask
    macs = sum(a * b for a, b in zip(enc[:-1], enc[1:])) + 2 * enc[-1] * k
    dec = [k, *cfg.decoder_units]
    dec_macs = sum(a * b for a, b in zip(dec[:-1], dec[1:])) + 2 * dec[-1] * d
    return 2.0 * (macs + (cfg.n_samples + 1) * dec_macs)


def rate(fn, x: np.ndarray, seconds: float) -> tuple[float, list[float]]:
    """Windows per second over repeated calls; per-call latencies in ms."""
    fn(x)
    fn(x)
    lat = []
    t_end = time.perf_counter() + seconds
    t_start = time.perf_counter()
    while time.perf_counter() < t_end or len(lat) < 20:
        t0 = time.perf_counter()
        fn(x)
        lat.append((time.perf_counter() - t0) * 1e3)
    return len(x) * len(lat) / (time.perf_counter() - t_start), lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    args = ap.parse_args()

    cfg = VAEConfig(window=32, n_features=8, encoder=(128, 64), latent=16, n_samples=10)
    rng = np.random.default_rng(0)
    det = VAEDetector(cfg)
    det.vae_ = VAE(cfg)  # weights as initialised: the cost of a forward pass does not depend on them
    det.scaler_ = Scaler().fit(rng.standard_normal((1000, 8)))
    flops = model_flops(cfg)

    peak = matmul_peak(args.seconds)
    rows = []
    for bs in (1, 32, 256, 4096):
        x = rng.standard_normal((bs, cfg.window, cfg.n_features)).astype(np.float32)
        wps, lat = rate(det.score, x, args.seconds)
        rows.append({"path": "VAEDetector.score (tf.function)", "batch": bs, "windows_per_s": wps,
                     "gflops": wps * flops / 1e9, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))})
    # For reference: the same graph compiled by XLA, and Keras predict (the trap to avoid).
    x256 = rng.standard_normal((256, cfg.window * cfg.n_features)).astype(np.float32)
    x256_enc = np.concatenate([x256, np.ones_like(x256)], axis=1)
    xla = GraphScorer(det.vae_, jit=True)
    wps, lat = rate(xla, x256, args.seconds)
    rows.append({"path": "same graph with XLA (reference)", "batch": 256, "windows_per_s": wps, "gflops": wps * flops / 1e9,
                 "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))})
    enc_pred = lambda x: det.vae_.encoder.predict(x, verbose=0)  # noqa: E731
    wps, lat = rate(enc_pred, x256_enc, min(args.seconds, 1.0))
    rows.append({"path": "keras encoder.predict alone (reference)", "batch": 256, "windows_per_s": wps, "gflops": float("nan"),
                 "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))})

    print(f"VAE scoring, W={cfg.window} F={cfg.n_features} {cfg.input_dim}->{'->'.join(map(str, cfg.encoder))}->{cfg.latent} "
          f"(decoder mirrored), L={cfg.n_samples}, one thread; {flops / 1e6:.2f} MFLOP per window")
    print(f"one-thread float32 matmul peak (2048x2048 NumPy): {peak:.1f} GFLOP/s\n")
    print(f"{'path':<40} {'batch':>6} {'windows/s':>11} {'GFLOP/s':>8} {'% peak':>7} {'p50 ms':>8} {'p99 ms':>8}")
    print("-" * 94)
    for r in rows:
        pct = 100 * r["gflops"] / peak if r["gflops"] == r["gflops"] else float("nan")
        print(f"{r['path']:<40} {r['batch']:>6} {r['windows_per_s']:>11,.0f} {r['gflops']:>8.1f} {pct:>6.1f}% {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")
    main_row = next(r for r in rows if r["batch"] == 256)
    b1 = next(r for r in rows if r["batch"] == 1)
    print(json.dumps({
        "windows_per_s": round(main_row["windows_per_s"]),
        "model_gflops": round(main_row["gflops"], 2),
        "peak_gflops": round(peak, 2),
        "ratio": round(main_row["gflops"] / peak, 3),
        "p99_ms_batch1": round(b1["p99_ms"], 3),
        "by_batch": {str(r["batch"]): round(r["windows_per_s"]) for r in rows[:4]},
        "mflop_per_window": round(flops / 1e6, 3),
    }))


if __name__ == "__main__":
    main()
