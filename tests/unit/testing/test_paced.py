"""Where one poll's time goes, and which records came a batch late (streamvae/testing/paced.py's
``_cycle`` and ``_late``), from hand-made shim rows."""

from __future__ import annotations

import pytest

from streamvae.testing.paced import _cycle, _late


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


def test_a_record_at_the_broker_before_the_poll_before_its_own_began_is_late() -> None:
    # polls return at 10.0, 10.1, 10.2 s after 20, 30, 5 ms of poll wall: they began at
    # 9980, 10070, 10195 ms. Rows: [t poll returned, t scored, t done, [sent_us, append_ms]...]
    cycles = [row(10.0, (0.020, 0.001), (0, 0), (0, 0), 1, 0),
              row(10.1, (0.030, 0.001), (0, 0), (0, 0), 2, 0),
              row(10.2, (0.005, 0.001), (0, 0), (0, 0), 3, 0)]
    batches = [[10.0, 0, 0, [9.0e6, 9970.0]],  # the first batch: no poll before it, never counted
               [10.1, 0, 0, [9.5e6, 9979.0, 9.6e6, 9990.0]],  # 9979 < 9980: late; 9990: not
               [10.2, 0, 0, [1.0e6, 10000.0, 9.7e6, 10069.0, 9.8e6, 10080.0]]]  # sent before the cut: left out
    assert _late(batches, cycles, cut_us=9.0e6) == pytest.approx(2 / 4)  # 9979 and 10069 of 9979, 9990, 10069, 10080
    assert _late(batches, cycles, cut_us=9.65e6) == pytest.approx(1 / 2)  # 10069 and 10080
    assert _late(batches[:1], cycles[:1], cut_us=0.0) is None
