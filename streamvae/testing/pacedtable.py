"""The tables of :mod:`streamvae.testing.paced`'s runs, as ``scripts/bench_e2e.py`` prints them.

A run is the dict :func:`~streamvae.testing.paced.measure_paced` returns. Each function
gives the table's lines; the script prints them, the tests read them.

- :func:`latency_lines`: the (e) table, latency at one rate, per stage, with where one
  poll's time goes on the daemon's main thread and the share of records a batch late;
- :func:`cpu_lines`: the (f) table, the daemon's CPU per record at 200/s, 2,000/s and
  at full speed.
"""

from __future__ import annotations

import os
from typing import Any


def fig(run: dict[str, Any] | None, stage: str, q: str) -> float | None:
    """``run[stage][q]`` to 0.1 ms for the JSON line; None if there is no run or no value."""
    v = None if run is None else run[stage][q]
    return None if v is None or v != v else round(v, 1)


def latency_lines(run: dict[str, Any], name: str, given_rate: bool, other: float, seconds: float,
                  target: bool) -> list[str]:
    """The (e) table of one latency run: ``name`` ("0.5 x"), ``given_rate`` (the rate came
    from --latency-rate, not from (c)), ``other`` (cores other processes used meanwhile),
    ``seconds`` measured after the warm-up; ``target``: show issue 17's p50/p99 target."""
    out = [f"(e) latency at {run['rate']:,.0f} records/s ({name} {'the given rate' if given_rate else 'e2e'}; "
           f"achieved {run['achieved_rate']:,.0f}/s; other {other:.2f}), "
           f"{seconds:.0f}s after the warm-up: {run['score']['n']:,} records in {run['polls']} polls "
           f"({run['mean_batch']:.0f} records/poll)",
           f"{'':<4}{'':<40} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    met = run["score"]["p50"] <= 10 and run["score"]["p99"] <= 20
    verdict = "  target p50 <= 10, p99 <= 20  " + ("MET" if met else "MISSED") if target else ""
    rows = (("produce -> score (process returned)", "score", verdict),
            (f"produce -> alert on its topic ({run['alert']['n']} alerts)", "alert", ""),
            ("produce -> batch done (alerts acknowledged)", "done", ""),
            ("produce -> poll returned", "poll", "  (Kafka + waiting for the batch before)"),
            ("produce -> broker append", "append", "  (producer linger + request)"))
    for label, stage, extra in rows:
        st = run[stage]
        out.append(f"{'':<4}{label:<40} {st['p50']:>8.1f} {st['p99']:>8.1f} {st['max']:>8.1f}{extra}")
    c = run["cpu"]
    out.append(f"    CPU while producing, share of one core: daemon {c['daemon']:.2f}, producer {c['producer']:.2f}, "
               f"broker {c['broker']:.2f}"
               + (f", the rest of the machine {c['other']:.2f}, idle {c['idle']:.2f}" if "idle" in c else "")
               + f" ({os.cpu_count()} cores in all)")
    cy = run.get("cycle")
    if cy:
        out.append(f"    one poll on the daemon's main thread, mean of {cy['polls']:,} ({cy['records_per_poll']:.0f} records), "
                   f"wall / CPU ms: poll {cy['poll_wall_ms']:.2f} / {cy['poll_cpu_ms']:.2f} (broker's wait included), "
                   f"process {cy['process_wall_ms']:.2f} / {cy['process_cpu_ms']:.2f} (model calls {cy['model_wall_ms']:.2f} wall), "
                   f"rest of the batch {cy['rest_wall_ms']:.2f} / {cy['rest_cpu_ms']:.2f}; "
                   f"cycle {cy['cycle_wall_ms']:.2f} ms; {cy['cpu_us_per_record']:.0f} us of main-thread CPU a record")
    if run.get("late") is not None:
        out.append(f"    records a batch late (at the broker before the poll before theirs began: kafka-python's early "
                   f"fetch, streamvae/kafka/readahead.py, or a backlog): {100 * run['late']:.1f}%")
    return out


def cpu_lines(cpu200: dict[str, Any], cpu2000: dict[str, Any], full_per_s: float, full_cpu_ms_per_1000: float) -> list[str]:
    """The (f) table: the paced runs at 200/s and 2,000/s, then the drain of (c) at full
    speed (``full_per_s`` records/s for ``full_cpu_ms_per_1000`` CPU ms per 1,000)."""
    out = [f"(f) the daemon's CPU: {'feed':<30} {'records/s':>10} {'CPU ms / 1,000 rec':>19} {'share of a core':>16} "
           f"{'records/poll':>13} {'CPU ms/poll':>12} {'score p50/p99 ms':>17}"]
    for label, run in (("paced, 200/s", cpu200), ("paced, 2,000/s", cpu2000)):
        lat = f"{run['score']['p50']:.0f} / {run['score']['p99']:.0f}"
        share = run["cpu"]["daemon"]
        out.append(f"{'':<20}{label:<30} {run['achieved_rate']:>10,.0f} {run['cpu_ms_per_1000']:>19,.0f} "
                   f"{share:>16.3f} {run['records_per_poll']:>13.1f} {run['cpu_ms_per_poll']:>12.2f} {lat:>17}"
                   + (f"  target <= 0.05  {'MET' if share <= 0.05 else 'MISSED'}" if run is cpu200 else ""))
    out.append(f"{'':<20}(score p50/p99: produce -> score; at a slow feed mostly the broker's fetch wait, "
               f"group.fetch_min_bytes / fetch_max_wait_ms)")
    out.append(f"{'':<20}{'full speed (the drain of (c))':<30} {full_per_s:>10,.0f} {full_cpu_ms_per_1000:>19,.0f} "
               f"{full_cpu_ms_per_1000 * full_per_s / 1e6:>16.3f}")
    return out
