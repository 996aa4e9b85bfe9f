"""bench_e2e's (e) and (f) tables (streamvae/testing/pacedtable.py) from hand-made runs."""

from __future__ import annotations

from typing import Any

from streamvae.testing.pacedtable import cpu_lines, fig, latency_lines


def stage(p50: float, p99: float, n: int = 100) -> dict[str, float]:
    return {"n": n, "p50": p50, "p99": p99, "max": p99 * 2}


def run(p50: float, p99: float, late: float | None = None, share: float = 0.03) -> dict[str, Any]:
    return {"rate": 12000.0, "achieved_rate": 11990.0, "polls": 50, "mean_batch": 240.0,
            "score": stage(p50, p99), "alert": stage(p50 + 1, p99 + 1, 7), "done": stage(p50 + 2, p99 + 2),
            "poll": stage(p50 - 5, p99 - 5), "append": stage(1.0, 3.0),
            "cpu": {"daemon": share, "producer": 0.1, "broker": 0.2}, "cycle": None, "late": late,
            "cpu_ms_per_1000": 150.0, "records_per_poll": 2.0, "cpu_ms_per_poll": 0.3}


def test_the_target_verdict_is_on_the_half_capacity_run_only_and_follows_both_percentiles() -> None:
    assert latency_lines(run(9.0, 19.0), "0.5 x", False, 0.01, 20.0, target=True)[2].endswith("MET")
    assert latency_lines(run(9.0, 21.0), "0.5 x", False, 0.01, 20.0, target=True)[2].endswith("MISSED")
    assert latency_lines(run(11.0, 19.0), "0.5 x", False, 0.01, 20.0, target=True)[2].endswith("MISSED")
    assert "target" not in latency_lines(run(9.0, 19.0), "0.9 x", False, 0.01, 20.0, target=False)[2]


def test_the_late_share_row_shows_only_when_measured() -> None:
    with_late = latency_lines(run(30.0, 90.0, late=0.665), "0.5 x", True, 0.01, 20.0, target=True)
    assert with_late[-1].endswith("66.5%") and "the given rate" in with_late[0]
    assert not any("batch late" in line for line in latency_lines(run(30.0, 90.0), "0.5 x", False, 0.01, 20.0, True))


def test_cpu_table_judges_the_200_per_s_share_and_derives_full_speed_share() -> None:
    lines = cpu_lines(run(90.0, 170.0, share=0.046), run(20.0, 33.0, share=0.3), 25000.0, 56.0)
    assert lines[1].endswith("target <= 0.05  MET") and "target" not in lines[2]
    assert lines[-1].split()[-1] == "1.400"  # 56 ms per 1,000 records at 25,000/s
    assert cpu_lines(run(90.0, 170.0, share=0.051), run(20.0, 33.0), 1.0, 1.0)[1].endswith("MISSED")


def test_fig_rounds_and_leaves_out_what_is_missing() -> None:
    assert fig(run(22.74, 118.9), "score", "p50") == 22.7
    assert fig(None, "score", "p50") is None
    assert fig(run(float("nan"), 1.0), "score", "p50") is None


def test_the_cpu_row_shows_the_rest_of_the_machine_when_it_was_watched() -> None:
    watched = run(30.0, 90.0)
    watched["cpu"] = {**watched["cpu"], "other": 0.31, "idle": 0.12}
    line = next(x for x in latency_lines(watched, "0.5 x", False, 0.01, 20.0, True) if "CPU while producing" in x)
    assert "the rest of the machine 0.31, idle 0.12" in line
    plain = next(x for x in latency_lines(run(30.0, 90.0), "0.5 x", False, 0.01, 20.0, True) if "CPU while" in x)
    assert "idle" not in plain and "broker 0.20" in plain
