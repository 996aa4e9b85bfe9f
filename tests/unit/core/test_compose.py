"""The settings the composition derives from the model: stated once, the same for every driver."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from streamvae.config import Config, EpisodesConfig, RecordsConfig
from streamvae.core.compose import episode_windows, max_gap


def test_episode_timing_scales_with_the_window_not_the_clock() -> None:
    e = EpisodesConfig()
    assert episode_windows(e, window=60) == {"open_after": 8, "close_after": 60, "update_every": 300, "accept_after": 180}
    assert episode_windows(e, window=30)["close_after"] == 30 and episode_windows(e, window=30)["accept_after"] == 90
    assert episode_windows(e, window=60, stride=10)["close_after"] == 6  # counted in windows: 60 readings
    assert episode_windows(replace(e, close_after=7, accept_after=11), window=60)["close_after"] == 7
    assert episode_windows(replace(e, accept=False), window=60)["accept_after"] == 0


def test_the_gap_rule_comes_from_the_training_interval_unless_set() -> None:
    cfg = Config()
    one_hz, five_min = SimpleNamespace(max_gap=None, interval=1.0), SimpleNamespace(max_gap=None, interval=300.0)
    assert max_gap(cfg, one_hz) == 30.0 and max_gap(cfg, five_min) == 9000.0  # 30 readings either way
    assert max_gap(cfg, SimpleNamespace(max_gap=None, interval=None)) is None  # an older model: no gap rule
    assert max_gap(cfg, SimpleNamespace(max_gap=12.0, interval=1.0)) == 12.0  # trained with --max-gap
    assert max_gap(replace(cfg, records=RecordsConfig(max_gap=5.0)), five_min) == 5.0  # the config wins
