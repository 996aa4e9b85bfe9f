"""Sliding windows: one definition of a window, cut at once or assembled reading by reading."""

from __future__ import annotations

import numpy as np
import pytest

from streamvae.core.windows import WindowAssembler, sliding_windows
from streamvae.errors import ConfigError, RecordError


def _series(n: int, f: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)


@pytest.mark.parametrize(
    ("n", "size", "stride", "ends"),
    [
        (10, 4, 1, [3, 4, 5, 6, 7, 8, 9]),
        (10, 4, 2, [3, 5, 7, 9]),
        (10, 4, 3, [3, 6, 9]),
        (11, 4, 4, [3, 7]),
        (4, 4, 1, [3]),
        (3, 4, 1, []),
    ],
)
def test_sliding_windows_shape_stride_and_end(n: int, size: int, stride: int, ends: list[int]) -> None:
    x = _series(n, f=3)
    w = sliding_windows(x, size, stride)
    assert w.values.shape == (len(ends), size, 3)
    assert w.values.dtype == np.float32
    assert w.end.tolist() == ends
    assert len(w) == len(ends)
    for j, e in enumerate(w.end):
        np.testing.assert_array_equal(w.values[j], x[e - size + 1 : e + 1])


def test_missing_values_stay_nan_and_are_masked() -> None:
    x = _series(8)
    x[3, 1] = np.nan
    x[5, 0] = np.nan
    w = sliding_windows(x, 4, 1)
    for j, e in enumerate(w.end):
        rows = x[e - 3 : e + 1]
        np.testing.assert_array_equal(np.isnan(w.values[j]), np.isnan(rows))
        np.testing.assert_array_equal(w.mask[j], ~np.isnan(rows))
    # never filled with 0 (or anything else)
    assert not np.any(w.values[~w.mask] == 0)
    assert np.isnan(w.values[~w.mask]).all()
    assert (~w.mask).sum() == 4 + 3  # row 3 is in windows ending 3..6, row 5 in those ending 5..7


def test_max_gap_starts_a_new_sequence() -> None:
    ts = np.array([0, 1, 2, 3, 4, 5, 20, 21, 22, 23, 24, 60, 61], dtype=float)
    x = _series(len(ts))
    w = sliding_windows(x, 3, 1, timestamps=ts, max_gap=5.0)
    # sequences [0..5], [6..10], [11..12] (too short for a window)
    assert w.end.tolist() == [2, 3, 4, 5, 8, 9, 10]
    starts = w.end - 3 + 1
    for s, e in zip(starts, w.end):
        assert np.all(np.diff(ts[s : e + 1]) <= 5.0), f"window {s}..{e} spans a gap"
    # without max_gap the same series gives windows across the gaps
    assert len(sliding_windows(x, 3, 1, timestamps=ts)) == len(ts) - 2


def test_max_gap_restarts_the_stride_phase() -> None:
    ts = np.r_[np.arange(7.0), 100 + np.arange(7.0)]
    w = sliding_windows(_series(len(ts)), 3, 2, timestamps=ts, max_gap=1.5)
    assert w.end.tolist() == [2, 4, 6, 9, 11, 13]


def _feed(asm: WindowAssembler, entity: str, ts: np.ndarray, x: np.ndarray) -> list:
    out = []
    for t, row in zip(ts, x):
        out += asm.push(entity, float(t), row)
    return out


@pytest.mark.parametrize("stride", [1, 2, 5])
def test_assembler_matches_sliding_windows_with_interleaved_entities(stride: int) -> None:
    size = 5
    rng = np.random.default_rng(3)
    series = {}
    for k, name in enumerate(["pump-1", "pump-2", "fan-9"]):
        n = 40 + 7 * k
        x = _series(n, f=3, seed=10 + k)
        x[rng.random(x.shape) < 0.05] = np.nan
        ts = np.cumsum(rng.choice([1.0, 1.0, 1.0, 30.0], size=n))  # a few gaps
        series[name] = (ts, x)
    # interleave readings of all entities in a random order, each entity in time order
    order = np.concatenate([[name] * len(series[name][0]) for name in series])
    rng.shuffle(order)
    pos = dict.fromkeys(series, 0)
    asm = WindowAssembler(size, stride, n_features=3, max_gap=10.0)
    got: dict[str, list] = {name: [] for name in series}
    for name in order:
        ts, x = series[name]
        i = pos[name]
        pos[name] += 1
        for win in asm.push(name, float(ts[i]), x[i]):
            assert win.entity == name
            got[name].append(win)
    assert len(asm) == 3
    for name, (ts, x) in series.items():
        ref = sliding_windows(x, size, stride, timestamps=ts, max_gap=10.0)
        assert len(ref) > 0
        assert [w.end_index for w in got[name]] == ref.end.tolist()
        for win, vals, e in zip(got[name], ref.values, ref.end):
            np.testing.assert_array_equal(win.values, vals)  # NaN-aware: same NaN cells
            np.testing.assert_array_equal(win.mask, ~np.isnan(vals))
            assert win.end_ts == ts[e]
            assert win.start_ts == ts[e - size + 1]


def test_assembler_window_is_a_copy() -> None:
    asm = WindowAssembler(3, 1, n_features=2)
    x = _series(6)
    wins = _feed(asm, "a", np.arange(6.0), x)
    np.testing.assert_array_equal(wins[0].values, x[0:3])  # not overwritten by later pushes


def test_a_clock_that_steps_back_beyond_the_lateness_starts_a_new_sequence() -> None:
    asm = WindowAssembler(3, 1, n_features=2, max_lateness=5.0)
    assert asm.push("a", 100.0, [1.0, 2.0]) == [] and asm.push("a", 101.0, [1.0, 2.0]) == []
    assert asm.push("a", 97.0, [1.0, 2.0])[0].end_index == 2  # 4 s late: appended, it completes a window
    assert asm.clock_resets_ == 0
    assert asm.push("a", 40.0, [5.0, 5.0]) == []  # 61 s back: not refused, a new sequence starts
    assert asm.clock_resets_ == 1
    assert asm.push("a", 41.0, [5.0, 5.0]) == []  # the old readings are not part of it
    [w] = asm.push("a", 42.0, [5.0, 5.0])
    assert (w.start_ts, w.end_ts) == (40.0, 42.0) and np.all(w.values == 5.0)
    assert asm.push("b", 1.0, [0.0, 0.0]) == []  # another entity has its own clock
    assert asm.clock_resets_ == 1


def test_a_repeated_timestamp_is_the_next_reading_in_arrival_order() -> None:
    asm = WindowAssembler(2, 1, n_features=1)
    asm.push("a", 10.0, [1.0])
    [w] = asm.push("a", 10.0, [2.0])  # same stamp: counted, taken in arrival order
    assert w.values[:, 0].tolist() == [1.0, 2.0] and (w.start_ts, w.end_ts) == (10.0, 10.0)
    assert asm.repeated_ts_ == 1 and asm.clock_resets_ == 0
    assert asm.push("a", 9.999, [3.0]) == []  # any step back with zero lateness: a new sequence
    assert asm.clock_resets_ == 1


def test_wrong_shape_is_a_record_error() -> None:
    asm = WindowAssembler(2, 1, n_features=3)
    with pytest.raises(RecordError) as e:
        asm.push("a", 0.0, [1.0, 2.0])
    assert e.value.reason == "wrong_shape"


def test_max_entities_evicts_least_recently_seen() -> None:
    asm = WindowAssembler(3, 1, n_features=1, max_entities=2)
    asm.push("a", 0.0, [0.0])
    asm.push("b", 0.0, [0.0])
    asm.push("a", 1.0, [0.0])  # a is now more recent than b
    asm.push("c", 0.0, [0.0])  # evicts b
    assert len(asm) == 2
    assert asm.evicted_ == 1
    # a kept its two readings: the third completes a window
    assert len(asm.push("a", 2.0, [0.0])) == 1
    # b starts over: two more readings do not complete a window
    assert asm.push("b", 1.0, [0.0]) == [] and asm.evicted_ == 2  # evicts c
    assert asm.push("b", 2.0, [0.0]) == []
    assert len(asm.push("b", 3.0, [0.0])) == 1
    assert asm.evicted_ == 2


def test_forget_drops_the_open_window() -> None:
    asm = WindowAssembler(2, 1, n_features=1)
    asm.push("a", 0.0, [0.0])
    asm.forget("a")
    asm.forget("never-seen")
    assert len(asm) == 0
    assert asm.push("a", 1.0, [0.0]) == []


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(size=0, stride=1), "window.size"),
        (dict(size=3.0, stride=1), "window.size"),
        (dict(size=3, stride=0), "window.stride"),
        (dict(size=3, stride=4), "window.stride"),
        (dict(size=3, stride=1, max_gap=0.0), "window.max_gap"),
        (dict(size=3, stride=1, max_gap=float("inf")), "window.max_gap"),
    ],
)
def test_bad_geometry_names_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        sliding_windows(_series(10), **kwargs)
    with pytest.raises(ConfigError, match=key):
        WindowAssembler(n_features=2, **kwargs)


def test_values_must_be_two_dimensional() -> None:
    with pytest.raises(ConfigError, match="2-d"):
        sliding_windows(np.zeros(10), 3)
