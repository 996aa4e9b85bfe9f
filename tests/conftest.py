"""Shared fixtures: a tiny VAE detector trained once per session on synthetic data.

The data are three correlated sinusoids (common period, fixed phase offsets) plus
Gaussian noise, so a window of normal readings is predictable from its neighbours and a
spike or a level shift on one feature breaks that structure.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from streamvae.model import configure_threads

# Before TensorFlow executes anything: one thread keeps the suite fast and the numbers
# reproducible on a shared 2-core machine.
configure_threads(1)

from streamvae.core.windows import sliding_windows  # noqa: E402
from streamvae.model.detector import VAEDetector  # noqa: E402
from streamvae.model.vae import VAEConfig  # noqa: E402

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


@pytest.fixture(scope="session")
def train_series() -> np.ndarray:
    """The raw training readings (N, F) the session detector was fitted on."""
    return make_series(1200, seed=1)


@pytest.fixture(scope="session")
def heldout_windows() -> np.ndarray:
    """Normal windows from an independent series (not seen in training)."""
    return sliding_windows(make_series(600, seed=2), WINDOW, 1).values


@pytest.fixture(scope="session")
def detector(train_series: np.ndarray) -> VAEDetector:
    """A tiny VAEDetector trained once; tests must not mutate it."""
    windows = sliding_windows(train_series, WINDOW, 1).values
    return VAEDetector(tiny_config(), FEATURE_NAMES).fit(windows)


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Callable[[str], Path]:
    """``artifact_dir("name")``: a fresh, not yet existing path under tmp_path."""

    def make(name: str = "model") -> Path:
        p = tmp_path / name
        assert not p.exists()
        return p

    return make


def state_diff(a: object, b: object, path: str = "", rel: float = 1e-5, tol: float = 1e-4) -> str | None:
    """Where two saved states differ (None: nowhere). Floats within ``rel`` or ``tol``,
    everything else exactly. The margin dates from when a window's float32 score moved in
    its last digit with the size of the model call it was scored in (BLAS blocks a matrix
    product by its shape); the model now scores in whole blocks of 16 windows, the same
    bits in any batch (tests/unit/model/test_score_equivalence.py), and
    tests/integration/test_crash_state.py passed once with ``rel = tol = 0`` too."""
    import math

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
