"""Per-feature standardisation: fitted ignoring NaN, missing stays missing, never divides by 0."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.core.scaler import Scaler
from streamvae.errors import DataError, NotFittedError


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal([10.0, -3.0, 0.0], [2.0, 0.5, 1.0], size=(500, 3))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def test_fit_ignores_nan() -> None:
    x = _data()
    s = Scaler().fit(x)
    for k in range(3):
        col = x[:, k][~np.isnan(x[:, k])]
        assert s.mean_[k] == pytest.approx(col.mean(), rel=1e-12)
        assert s.scale_[k] == pytest.approx(col.std(), rel=1e-12)
    z = s.transform(x)
    obs = ~np.isnan(z)
    for k in range(3):
        assert np.mean(z[obs[:, k], k]) == pytest.approx(0.0, abs=1e-5)
        assert np.std(z[obs[:, k], k]) == pytest.approx(1.0, abs=1e-5)


def test_fit_accepts_windows() -> None:
    x = _data()
    windows = np.stack([x[i : i + 10] for i in range(0, 490, 10)])  # (49, 10, 3), no overlap
    a, b = Scaler().fit(windows), Scaler().fit(x[:490])
    np.testing.assert_allclose(a.mean_, b.mean_, rtol=1e-12)
    np.testing.assert_allclose(a.scale_, b.scale_, rtol=1e-12)
    assert a.transform(windows).shape == windows.shape


@pytest.mark.parametrize("level", [0.0, 5.0, -1e4])
def test_constant_feature_gets_a_finite_positive_scale(level: float) -> None:
    x = np.column_stack([np.full(100, level), np.linspace(0, 1, 100)])
    s = Scaler().fit(x)
    assert np.all(np.isfinite(s.scale_)) and np.all(s.scale_ > 0)
    z = s.transform(np.array([[level, 0.5], [level + 1.0, 0.5], [level - 1e6, 0.5]]))
    assert np.all(np.isfinite(z)), z
    assert z[0, 0] == 0.0
    # a change of 1% of the level (or of 0.01 below level 1) reads as one "standard deviation"
    step = 0.01 * max(abs(level), 1.0)
    assert s.transform(np.array([[level + step, 0.5]]))[0, 0] == pytest.approx(1.0, rel=1e-5)


def test_nan_stays_nan() -> None:
    s = Scaler().fit(_data())
    q = np.array([[np.nan, 1.0, np.nan], [3.0, np.nan, 0.0]])
    z = s.transform(q)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(q))
    back = s.inverse_transform(z)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(q))


def test_inverse_transform_round_trip() -> None:
    x = _data(1)
    s = Scaler().fit(x)
    back = s.inverse_transform(s.transform(x))
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


def test_arrays_round_trip() -> None:
    s = Scaler().fit(_data())
    t = Scaler.from_arrays(**s.to_arrays())
    x = _data(2)
    np.testing.assert_array_equal(s.transform(x), t.transform(x))


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "to_arrays"])
def test_unfitted_raises(method: str) -> None:
    s = Scaler()
    args = () if method == "to_arrays" else (np.zeros((2, 3)),)
    with pytest.raises(NotFittedError, match="fit"):
        getattr(s, method)(*args)


def test_feature_with_no_observation_is_a_data_error() -> None:
    x = _data()
    x[:, 1] = np.nan
    with pytest.raises(DataError, match=r"\[1\]"):
        Scaler().fit(x)
