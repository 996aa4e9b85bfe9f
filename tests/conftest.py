"""Shared fixtures: a tiny VAE detector trained once per session on synthetic data
(tests/helpers.py makes the data)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from streamvae.model import configure_threads

# Before TensorFlow executes anything: one thread keeps the suite fast and the numbers
# reproducible on a shared 2-core machine.
configure_threads(1)

from streamvae.core.windows import sliding_windows  # noqa: E402
from streamvae.model.detector import VAEDetector  # noqa: E402

from helpers import FEATURE_NAMES, WINDOW, make_series, tiny_config  # noqa: E402


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
