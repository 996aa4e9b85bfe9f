"""Rebalances (issue 16, item 5): one, two, three, then one daemon of one group on 6 partitions.

A live feed runs throughout (36 entities, level shifts, a refused record every 50 steps).
Every ``stage_s`` seconds the group changes: a second daemon joins, a third joins, then
both leave with SIGTERM (a clean shutdown: last checkpoint and commit). Partitions move
at each step; the accounting must hold as in the crash loop, and a partition that moves
keeps its windows: its new owner rebuilds them from the committed position and scores
only what was not scored (``windows_rescored`` counts the windows scored twice).
"""

from __future__ import annotations

import time

from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.run import Run


def run(ctx: Context, stage_s: float | None = None) -> Outcome:
    stage_s = stage_s if stage_s is not None else (10.0 if ctx.quick else 40.0)
    r = Run(ctx, "rebalance", partitions=6, entities=36, steps_per_s=20.0)
    r.feeder.start()
    first = r.start()
    time.sleep(stage_s)
    second = r.start()
    time.sleep(stage_s)
    third = r.start()
    time.sleep(stage_s)
    codes = [second.stop(60.0), third.stop(60.0)]
    time.sleep(stage_s)
    out = r.reckon(first)
    out.notes["leaving_exit_codes"] = codes
    return out
