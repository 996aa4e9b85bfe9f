"""What the tests share besides fixtures (those are in conftest.py): the tiny model's
synthetic data and configuration, a deep comparison of saved states, and a detector
wrapper that holds a worker thread's calls.

The data are three correlated sinusoids (common period, fixed phase offsets) plus
Gaussian noise, so a window of normal readings is predictable from its neighbours and a
spike or a level shift on one feature breaks that structure.

A module of its own, not conftest.py: tests/integration has a conftest.py too, and two
modules named ``conftest`` cannot both be imported by that name.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from streamvae.model.vae import VAEConfig

WINDOW = 16
N_FEATURES = 3
PERIOD = 25.0
NOISE = 0.1
FEATURE_NAMES = ["flow", "pressure", "temp"]


def make_series(n: int, seed: int, noise: float = NOISE) -> np.ndarray:
    """(n, 3) correlated sinusoids with noise; a random phase per call."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) + rng.uniform(0, PERIOD)
    base = 2 * np.pi * t / PERIOD
    x = np.stack([np.sin(base), 0.8 * np.sin(base + 0.6), 0.5 * np.sin(base) + 0.5 * np.cos(base + 0.3) + 2.0], axis=1)
    return x + noise * rng.standard_normal(x.shape)


def tiny_config(**overrides: object) -> VAEConfig:
    kw: dict[str, object] = dict(
        window=WINDOW, n_features=N_FEATURES, encoder=(32, 16), latent=4, epochs=40, batch_size=32, patience=10, seed=7
    )
    kw.update(overrides)
    return VAEConfig(**kw)  # type: ignore[arg-type]


def state_diff(a: object, b: object, path: str = "", rel: float = 1e-5, tol: float = 1e-4) -> str | None:
    """Where two saved states differ (None: nowhere). Floats within ``rel`` or ``tol``,
    everything else exactly. The margin dates from when a window's float32 score moved in
    its last digit with the size of the model call it was scored in (BLAS blocks a matrix
    product by its shape); the model now scores in whole blocks of 16 windows, the same
    bits in any batch (tests/unit/model/test_score_equivalence.py), and
    tests/integration/test_crash_state.py passed once with ``rel = tol = 0`` too."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))[:5]}"
        return next((d for k in a if (d := state_diff(a[k], b[k], f"{path}.{k}", rel, tol))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: len {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := state_diff(x, y, f"{path}[{i}]", rel, tol))), None)
    if isinstance(a, float) and isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=rel, abs_tol=tol) else f"{path}: {a!r} != {b!r}"
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        same = a.shape == b.shape and (np.allclose(a, b, rtol=rel, atol=tol, equal_nan=True) if a.dtype.kind == "f"
                                       else np.array_equal(a, b))
        return None if same else f"{path}: arrays differ ({a.shape} {b.shape})"
    return None if a == b else f"{path}: {a!r} != {b!r}"


class HeldUntilIdle:
    """The detector, except that the worker thread's calls wait until the pipeline's
    ``idle`` callback ran (``idle.set()``; at most 30 s, so a broken pipeline fails, not
    hangs): a big batch then surely takes the pipeline's idle path."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.names = detector.names
        self.version_: str | None = detector.version_
        self.idle = threading.Event()

    def score(self, x: Any, detail: bool = True) -> Any:
        if threading.current_thread() is not threading.main_thread():
            assert self.idle.wait(30), "the pipeline never called idle while the model was busy"
        return self.detector.score(x, detail)
