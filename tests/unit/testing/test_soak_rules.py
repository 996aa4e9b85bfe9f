"""The soak's rules (streamvae/testing/proof/soak.py) without a broker: warm-up, memory
growth, bounded lag, error lines, and a feed the daemon's decoder accepts."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from streamvae.core.records import RecordDecoder
from streamvae.testing.proof.plant import T0, series
from streamvae.testing.proof.soak import (LAG_ALLOWANCE_S, entity_name, error_lines, lag_bounded, messages, readings,
                                          rss_growth, warmup_s)

RATE = 2000.0


def test_warmup_is_a_fifth_of_the_run_capped_at_five_minutes_and_leaves_two_to_judge() -> None:
    fill = 16 * 10_000 / RATE  # every entity's first window: 80 s
    assert warmup_s(1800, fill) == 300.0  # 30 minutes: capped
    assert warmup_s(600, fill) == 140.0  # the windows and a minute more, above 20% of 10 minutes
    assert warmup_s(1200, fill) == 240.0  # 20% of 20 minutes
    assert warmup_s(300, 400.0) == 180.0  # a slow feed: never less than two minutes judged
    assert warmup_s(60, fill) == 0.0


def _ramp(t_end: float, start_mb: float, end_mb: float, every: float = 5.0) -> list[tuple[float, float]]:
    ts = np.arange(0, t_end + every / 2, every)
    return list(zip(ts.tolist(), np.linspace(start_mb, end_mb, len(ts)).tolist()))


def test_growth_compares_the_first_and_last_minute_medians_after_warm_up() -> None:
    flat = [(t, 600.0 + (1.0 if i % 2 else -1.0)) for i, (t, _) in enumerate(_ramp(1800, 0, 0))]
    assert rss_growth(flat, 300, 1800)[2] == pytest.approx(0.0, abs=1e-3)
    # a leak of 2 MiB a minute: 50 MiB over the 25 judged minutes of 600, found
    first, last, growth = rss_growth(_ramp(1800, 590, 650), 300, 1800)
    assert 0.07 < growth < 0.09 and first < last
    # what happened during warm-up does not count
    warm_peak = [(t, 900.0 if t < 300 else 600.0) for t, _ in _ramp(1800, 0, 0)]
    assert rss_growth(warm_peak, 300, 1800)[2] == 0.0


def test_one_high_sample_in_the_last_minute_does_not_make_growth() -> None:
    s = [(t, 600.0) for t, _ in _ramp(1800, 0, 0)]
    s[-3] = (s[-3][0], 700.0)  # one checkpoint's peak
    assert rss_growth(s, 300, 1800)[2] == 0.0


def test_growth_is_nan_without_samples_after_warm_up() -> None:
    assert math.isnan(rss_growth([(0.0, 600.0)], 300, 1800)[2])


def _lags(deficit: float, stall_at: float | None = None) -> list[tuple[float, float]]:
    """Lag samples every 5 s of a daemon that scores (1 - deficit) x RATE and polls
    every 0.25 s, optionally stalled for 8 s at ``stall_at``."""
    out = []
    for t in np.arange(300, 1800.1, 5).tolist():
        lag = RATE * 0.25 + deficit * RATE * (t - 300)
        if stall_at is not None and 0 <= t - stall_at < 8:
            lag += RATE * (t - stall_at)
        out.append((t, lag))
    return out


def test_a_daemon_that_keeps_up_has_bounded_lag_even_with_one_stall() -> None:
    assert lag_bounded(_lags(0.0), 300, 1800, RATE * LAG_ALLOWANCE_S)[0]
    assert lag_bounded(_lags(0.0, stall_at=1700), 300, 1800, RATE * LAG_ALLOWANCE_S)[0]


def test_a_daemon_short_of_the_rate_by_two_percent_fails_the_rule() -> None:
    bounded, first, last = lag_bounded(_lags(0.02), 300, 1800, RATE * LAG_ALLOWANCE_S)
    assert not bounded and last > first + RATE * LAG_ALLOWANCE_S


def test_lag_without_samples_in_a_third_is_not_bounded() -> None:
    assert not lag_bounded([(300.0, 10.0)], 300, 1800, RATE * LAG_ALLOWANCE_S)[0]


def test_error_lines_are_the_records_at_error_or_critical() -> None:
    log = "\n".join([
        "2026-12-05 04:50:00,123 INFO streamvae.service.daemon: consuming soak with ERROR in its name",
        "2026-12-05 04:50:01,001 WARNING kafka.conn: broker down",
        "2026-12-05 04:50:02,002 ERROR streamvae.service.daemon: delivery failed",
        "Traceback (most recent call last):",
        "2026-12-05 04:50:03,003 CRITICAL streamvae.cli: out of memory",
        "Exception in thread scoring:",
    ])
    assert error_lines(log) == [
        "2026-12-05 04:50:02,002 ERROR streamvae.service.daemon: delivery failed",
        "2026-12-05 04:50:03,003 CRITICAL streamvae.cli: out of memory",
        "Exception in thread scoring:",
    ]


def test_the_feed_is_round_robin_one_second_apart_and_the_decoder_accepts_it() -> None:
    dec = RecordDecoder(("a", "b", "c", "d"))
    got = list(itertools.islice(messages(("a", "b", "c", "d"), 50, seed=3), 150))
    readings = [r for k, v in got for r in dec.decode(json.loads(v), k.decode())]
    assert [r.entity for r in readings[:51]] == [entity_name(e) for e in range(50)] + [entity_name(0)]
    assert [r.ts for r in readings[::50]] == [T0, T0 + 1, T0 + 2]
    x = np.stack([r.values for r in readings])
    assert x.shape == (150, 4) and np.isfinite(x).all()
    assert abs(float(x[:, 2].mean()) - 2.0) < 0.3  # the harness's plant: c oscillates around 2


def test_a_step_of_readings_is_the_plants_series_at_that_second() -> None:
    rng = np.random.default_rng(5)
    phase = rng.uniform(0, 60, 300)
    got = readings(7, phase, rng)
    want = np.concatenate([series(1, 0, start=7, phase=p) for p in phase.tolist()])
    diff = got - want  # two draws of the noise (sd 0.1 each): the sinusoids are the same
    assert got.shape == (300, 4) and abs(float(diff.mean())) < 0.02 and float(diff.std()) < 0.2
