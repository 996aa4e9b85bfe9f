"""Where one poll's time goes (streamvae/testing/paced.py's ``_cycle``) from hand-made shim rows."""

from __future__ import annotations

import pytest

from streamvae.testing.paced import _cycle


def row(t: float, poll: tuple[float, float], process: tuple[float, float], handle: tuple[float, float],
        n: int, model: float) -> list[float]:
    """One poll as scripts/latencyshim.py notes it: t, poll wall/CPU, process wall/CPU,
    handle wall/CPU (seconds), records, model calls' wall."""
    return [t, *poll, *process, *handle, n, model]


def test_means_per_poll_leave_out_the_warm_up_and_count_cpu_per_record() -> None:
    rows = [row(99.0, (9.0, 9.0), (9.0, 9.0), (9.0, 9.0), 1, 9.0),  # the warm-up: left out
            row(100.0, (0.004, 0.001), (0.010, 0.008), (0.012, 0.009), 100, 0.006),
            row(101.0, (0.002, 0.001), (0.006, 0.004), (0.008, 0.005), 300, 0.004)]
    c = _cycle(rows, cut_us=100.0e6)
    assert c is not None and c["polls"] == 2 and c["records_per_poll"] == 200.0
    assert c["poll_wall_ms"] == 3.0 and c["poll_cpu_ms"] == 1.0
    assert c["process_wall_ms"] == 8.0 and c["process_cpu_ms"] == 6.0
    assert c["rest_wall_ms"] == 2.0 and c["rest_cpu_ms"] == 1.0  # handle less process
    assert c["model_wall_ms"] == 5.0
    assert c["cycle_wall_ms"] == 13.0  # poll + handle
    # main-thread CPU: polls 2 ms + handles 14 ms over 400 records
    assert c["cpu_us_per_record"] == pytest.approx(40.0)


def test_nothing_after_the_warm_up_is_none() -> None:
    assert _cycle([row(1.0, (1, 1), (1, 1), (1, 1), 1, 1)], cut_us=2e6) is None
    assert _cycle([], cut_us=0.0) is None
