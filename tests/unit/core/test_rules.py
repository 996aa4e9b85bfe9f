"""Dead and stuck sensors: faults the likelihood cannot see, flagged by explicit rules."""

from __future__ import annotations

import numpy as np

from streamvae.core.rules import SensorRules


def _windows(n: int = 6, w: int = 16, f: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, w, f)).astype(np.float32)


def test_dead_sensor_is_flagged_with_its_feature() -> None:
    x = _windows()
    x[2, :, 1] = np.nan  # dead for the whole window
    x[3, :8, 0] = np.nan  # a short gap is missing data, not a dead sensor
    x[4] = np.nan  # nothing at all: no rule (nothing to compare with)
    got = SensorRules(dead=True, stuck=False).check(x)
    assert got == [None, None, ("dead_sensor", 1), None, None, None]


def test_the_rules_judge_the_newest_half_of_the_window() -> None:
    x = _windows()
    x[1, 8:, 0] = np.nan  # dead for the newest 8 of 16 readings: called at once
    x[2, 8:, 1] = 2.5  # stuck for the newest 8
    x[3, :8, 2] = 2.5  # stuck for the oldest 8, then noisy again: over
    got = SensorRules().check(x)
    assert got == [None, ("dead_sensor", 0), ("stuck_sensor", 1), None, None, None]


def test_stuck_sensor_needs_half_a_window_of_one_exact_value() -> None:
    x = _windows()
    x[1, :, 2] = 3.25  # stuck
    x[2, :6, 0] = 1.0  # constant over less than half the window: not stuck
    x[5, :, 0] = 7.0
    x[5, :4, 0] = np.nan  # stuck over the observed 12 of 16
    got = SensorRules(dead=False, stuck=True).check(x)
    assert got == [None, ("stuck_sensor", 2), None, None, None, ("stuck_sensor", 0)]


def test_a_feature_constant_in_training_is_not_called_stuck() -> None:
    x = _windows()
    x[:, :, 2] = 32.0
    assert SensorRules(varies=[True, True, False]).check(x) == [None] * 6
    assert all(r == ("stuck_sensor", 2) for r in SensorRules(varies=[True, True, True]).check(x))


def test_normal_windows_pass_both_rules() -> None:
    assert SensorRules().check(_windows(n=200)) == [None] * 200
