#!/usr/bin/env python
"""Scoring throughput of the VAE through the daemon's scoring path, against the
machine's one-thread float32 matmul peak measured in the same run.

Network: W=32, F=8 (input 256; the encoder reads it with its missing-cell mask, 512) ->
128 -> 64 -> latent 16, mirrored decoder with mean and variance heads; L=10 samples of z
per window; one thread for NumPy's BLAS and for TensorFlow.

Headline (windows_per_s, model_gflops, ratio, by_batch, p99_ms_batch1, latency_ms): the
call the pipeline makes for every window, ``VAEDetector.score(x, detail=False)`` (scaling,
then streamvae.model.fused.FusedScorer), counted at the matmul FLOPs of that path: the
encoder once and the decoder L times, 1.65 MFLOP per window.

Until 2026-12-05 the headline row was ``score(x)`` WITH detail, through the TensorFlow
graph, counted at 1.80 MFLOP per window (the detail adds the MSE ablation's decoder pass
at the posterior mean, and the attribution shares). The pipeline makes that call only
for the windows it flagged. It is the ``full`` row now, counted at its own FLOPs, and
the former headline itself is the reference row ``graph_full_ratio``.

Reference rows, same run: the TensorFlow graph (GraphScorer) with detail and on the
lean path, plain and (lean) under XLA (``xla_compile_s``: its first call at a new batch bucket, which compiles),
and Keras ``predict`` (the per-call overhead to avoid).

Each row's measuring time (``--seconds``) is cut into ``--slices`` slices, and the rows
take their slices in turn, so that a burst of load from the other work on a shared
machine weighs on every row alike. A row's rate is its windows over its measuring time,
calls back to back (``ratio``); ``ratio_p50`` is the same from the median call's time,
which a busy machine moves less. The peak is the best 2048x2048 float32 NumPy matmul,
sampled before each round of slices; ``peak_spread`` gives the worst and the best
sample (how busy the machine was).

The fused scorer's elementwise tail is C (streamvae/model/_tail.c) where it was built at
install, else NumPy (or with ``--numpy-tail``); where it is C, a scores-only call is one C
pass without the GIL (``FusedScorer.whole_pass``; ``--numpy-pass`` keeps the NumPy pass
around the C tail). The table's detector rows and the JSON's ``tail`` say which ran:
``C pass``, ``C`` or ``NumPy``.

Prints a table, then one JSON line.

    .venv/bin/python scripts/bench_model.py [--seconds 2] [--numpy-tail] [--numpy-pass]
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
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from streamvae.core.scaler import Scaler  # noqa: E402
from streamvae.model import fused  # noqa: E402
from streamvae.model.detector import VAEDetector  # noqa: E402
from streamvae.model.fused import FusedScorer  # noqa: E402
from streamvae.model.score import GraphScorer  # noqa: E402
from streamvae.model.vae import VAE, VAEConfig  # noqa: E402

LEAN = "VAEDetector.score, lean (the daemon's)"
FULL = "VAEDetector.score, with detail"
GRAPH = "GraphScorer (tf.function), lean"
GRAPH_FULL = "GraphScorer (tf.function), with detail"
XLA = "GraphScorer, XLA, lean"


class Peak:
    """Best GFLOP/s of a float32 2048x2048 NumPy matmul on one thread, over every sample."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((2048, 2048), dtype=np.float32)
        self.b = rng.standard_normal((2048, 2048), dtype=np.float32)
        self.samples: list[float] = []

    def sample(self, seconds: float) -> None:
        self.a @ self.b
        best = float("inf")
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            self.a @ self.b
            best = min(best, time.perf_counter() - t0)
        self.samples.append(2 * 2048**3 / best / 1e9)

    @property
    def gflops(self) -> float:
        return max(self.samples)


def encoder_macs(cfg: VAEConfig) -> int:
    enc = [2 * cfg.input_dim, *cfg.encoder]  # the encoder reads the window and its missing-cell mask
    return sum(a * b for a, b in zip(enc[:-1], enc[1:])) + 2 * enc[-1] * cfg.latent


def decoder_macs(cfg: VAEConfig) -> int:
    dec = [cfg.latent, *cfg.decoder_units]
    return sum(a * b for a, b in zip(dec[:-1], dec[1:])) + 2 * dec[-1] * cfg.input_dim


def lean_flops(cfg: VAEConfig) -> float:
    """Matmul FLOPs to score one window without detail: encoder once, decoder (both heads) L times."""
    return 2.0 * (encoder_macs(cfg) + cfg.n_samples * decoder_macs(cfg))


def full_flops(cfg: VAEConfig) -> float:
    """With detail: also the decoder at the posterior mean once, for the MSE ablation."""
    return lean_flops(cfg) + 2.0 * decoder_macs(cfg)


@dataclass
class Row:
    """One path at one batch size: its calls, back to back, in slices spread over the run."""

    path: str
    batch: int
    flops: float  # per window; 0 where not counted
    fn: Callable[[np.ndarray], Any]
    x: np.ndarray
    calls: int = 0
    seconds: float = 0.0
    lat: list[float] = field(default_factory=list)  # ms per call

    def run(self, seconds: float) -> None:
        t_start = t_end = time.perf_counter()
        while t_end - t_start < seconds or not self.calls:
            self.fn(self.x)
            t = time.perf_counter()
            self.lat.append((t - t_end) * 1e3)
            self.calls += 1
            t_end = t
        self.seconds += t_end - t_start

    @property
    def windows_per_s(self) -> float:
        return self.batch * self.calls / self.seconds

    @property
    def gflops(self) -> float:
        return self.windows_per_s * self.flops / 1e9 if self.flops else float("nan")

    def p(self, q: float) -> float:
        return float(np.percentile(self.lat, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    ap.add_argument("--slices", type=int, default=8, help="each row's time is cut in this many slices, taken in turn")
    ap.add_argument("--numpy-tail", action="store_true", help="score with the NumPy tail even where the C one is built")
    ap.add_argument("--numpy-pass", action="store_true",
                    help="score the lean rows with the NumPy pass around the C tail, not the whole pass in C")
    args = ap.parse_args()
    sec, slices = args.seconds, args.slices
    if args.numpy_tail:  # before the detector builds its scorer
        fused.TAIL = None
    if args.numpy_pass:
        fused.FORWARD = False

    cfg = VAEConfig(window=32, n_features=8, encoder=(128, 64), latent=16, n_samples=10)
    rng = np.random.default_rng(0)
    det = VAEDetector(cfg)
    vae = det.vae_ = VAE(cfg)  # weights as initialised: the cost of a forward pass does not depend on them
    det.scaler_ = Scaler().fit(rng.standard_normal((1000, 8)))
    lean, full = lean_flops(cfg), full_flops(cfg)
    windows = {bs: rng.standard_normal((bs, cfg.window, cfg.n_features)).astype(np.float32) for bs in (1, 8, 32, 256, 4096)}

    def scaled(x: np.ndarray) -> np.ndarray:
        assert det.scaler_ is not None
        return det.scaler_.transform(x).reshape(len(x), -1)

    scorer = det._fitted()[1]
    tail = "graph"  # C pass (_tail.c's forward), C (_tail.c's tail in the NumPy pass) or NumPy
    if isinstance(scorer, FusedScorer):
        tail = "C pass" if scorer.whole_pass else scorer.tail
    graph, xla = GraphScorer(vae), GraphScorer(vae, jit=True)
    t0 = time.perf_counter()
    xla(scaled(windows[256]), detail=False)  # compiles the 256 bucket
    xla_compile_s = time.perf_counter() - t0
    x_enc = np.concatenate([scaled(windows[256]), np.ones((256, cfg.input_dim), np.float32)], axis=1)
    rows = [Row(LEAN, bs, lean, lambda x: det.score(x, detail=False), x) for bs, x in windows.items()]
    rows += [Row(FULL, bs, full, det.score, windows[bs]) for bs in (1, 256)]
    rows += [
        # references, with the same scaling as the detector
        Row(GRAPH, 256, lean, lambda x: graph(scaled(x), detail=False), windows[256]),
        Row(GRAPH_FULL, 256, full, lambda x: graph(scaled(x)), windows[256]),  # the headline until 2026-12-05
        Row(XLA, 256, lean, lambda x: xla(scaled(x), detail=False), windows[256]),
        Row("keras encoder.predict alone", 256, 0.0, lambda x: vae.encoder.predict(x, verbose=0), x_enc),
    ]
    for r in rows:  # warm: first calls allocate, trace, fill caches
        r.fn(r.x)
        r.fn(r.x)
    # Rows in turn, slice by slice, the peak sampled before each round: a burst of load
    # on this shared machine then weighs on every row alike, not on whichever row it hit.
    peak = Peak()
    for _ in range(slices):
        peak.sample(sec / slices)
        for r in rows:
            r.run(sec / slices)

    pk = peak.gflops
    print(f"VAE scoring, W={cfg.window} F={cfg.n_features} {cfg.input_dim}->{'->'.join(map(str, cfg.encoder))}->{cfg.latent} "
          f"(decoder mirrored), L={cfg.n_samples}, one thread; {lean / 1e6:.2f} MFLOP per window lean, {full / 1e6:.2f} with detail")
    print(f"one-thread float32 matmul peak (2048x2048 NumPy): {pk:.1f} GFLOP/s (samples {min(peak.samples):.1f}-{pk:.1f})")
    print(f"the detector's fused scorer: {tail} ([C pass]: the whole scores-only pass in C, [C]: the elementwise tail in C; streamvae/model/_tail.c)\n")
    print(f"{'path':<52} {'batch':>6} {'windows/s':>11} {'GFLOP/s':>8} {'% peak':>7} {'p50 ms':>8} {'p99 ms':>8}")
    print("-" * 106)
    for r in rows:
        label = f"{r.path} [{tail} tail]" if r.path in (LEAN, FULL) else r.path
        print(f"{label:<52} {r.batch:>6} {r.windows_per_s:>11,.0f} {r.gflops:>8.1f} {100 * r.gflops / pk:>6.1f}% "
              f"{r.p(50):>8.3f} {r.p(99):>8.3f}")

    def pick(path: str, batch: int) -> Row:
        return next(r for r in rows if r.path == path and r.batch == batch)

    head, graph_row, xla_row, full_row = pick(LEAN, 256), pick(GRAPH, 256), pick(XLA, 256), pick(FULL, 256)
    print(json.dumps({
        "windows_per_s": round(head.windows_per_s),
        "model_gflops": round(head.gflops, 2),
        "peak_gflops": round(pk, 2),
        "ratio": round(head.gflops / pk, 3),
        "ratio_p50": round(256 * lean / head.p(50) / 1e6 / pk, 3),  # from the median call: less moved by a busy machine
        "p99_ms_batch1": round(pick(LEAN, 1).p(99), 3),
        "by_batch": {str(r.batch): round(r.windows_per_s) for r in rows if r.path == LEAN},
        "mflop_per_window": round(lean / 1e6, 3),
        "path": "VAEDetector.score(x, detail=False)",
        "tail": tail,
        "latency_ms": {str(r.batch): {"p50": round(r.p(50), 3), "p99": round(r.p(99), 3)} for r in rows if r.path == LEAN},
        "full": {"windows_per_s": round(full_row.windows_per_s), "ratio": round(full_row.gflops / pk, 3),
                 "mflop_per_window": round(full / 1e6, 3), "p99_ms_batch1": round(pick(FULL, 1).p(99), 3)},
        "graph_lean_ratio": round(graph_row.gflops / pk, 3),
        "graph_full_ratio": round(pick(GRAPH_FULL, 256).gflops / pk, 3),
        "xla_lean_ratio": round(xla_row.gflops / pk, 3),
        "xla_compile_s": round(xla_compile_s, 2),
        "speedup_vs_graph": round(head.windows_per_s / graph_row.windows_per_s, 2),
        "peak_spread": [round(min(peak.samples), 1), round(pk, 1)],
    }))


if __name__ == "__main__":
    main()
