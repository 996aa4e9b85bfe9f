"""The crash loop (issue 16, item 3): SIGKILL at 20 moments, restart each time, account.

A live feed runs the whole time (3 partitions, 30 entities, level shifts injected, a
refused record every 50 steps). The daemon serves a registry, retrains (local buffer,
a short trigger) and checkpoints into its state folder. Each of its lives ends in a
SIGKILL at one of these moments, in turn, with a random count (the n-th time it gets
there) or a random delay:

- ``timer``: from outside, 1-8 s after it is ready, wherever it is (mostly polling);
- ``scored``: a batch is scored, nothing of it sent;
- ``sent``: its alerts, dead letters and scores are queued to the producer, not acknowledged
  (in exactly-once mode: inside the open transaction);
- ``after_delivery``: acknowledged, not committed nor checkpointed;
- ``after_checkpoint``: the checkpoint is written, its offsets not committed;
- ``after_commit``: the commit is confirmed, the state since the checkpoint not saved;
- ``during_swap``: a promoted model is loaded and about to serve;
- ``during_retrain``: a retrain child was just started.

A point not reached within 45 s ends in an outside SIGKILL instead (noted). Then one
daemon scores the rest and stops cleanly, and every record, window and anomaly is
accounted for (streamvae/testing/proof/account.py).
"""

from __future__ import annotations

import random
import time

from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.run import Run

POINTS = ("timer", "scored", "sent", "after_delivery", "after_checkpoint", "after_commit", "during_swap",
          "during_retrain")
QUICK = ("sent", "after_checkpoint", "timer")
REACH_S = 45.0


def plan(kills: int, quick: bool, rng: random.Random) -> list[tuple[str, float]]:
    """(point, count or delay) per kill; every point in turn.

    >>> plan(3, True, random.Random(0))[0][0], len(plan(20, False, random.Random(0)))
    ('sent', 20)
    """
    points = QUICK if quick else POINTS
    out = []
    for j in range(kills):
        p = points[j % len(points)]
        if p == "timer":
            out.append((p, round(rng.uniform(1.0, 8.0), 2)))
        elif p in ("during_swap", "during_retrain", "after_checkpoint"):
            out.append((p, 1))
        else:
            out.append((p, rng.randint(2, 12)))
    return out


def run(ctx: Context, kills: int | None = None, delivery: str = "at_least_once") -> Outcome:
    rng = random.Random(ctx.seed)
    kills = kills if kills is not None else (3 if ctx.quick else 20)
    name = "crashloop" if delivery == "at_least_once" else "crashloop-eos"
    r = Run(ctx, name, partitions=3, entities=30, steps_per_s=20.0, delivery=delivery, settings={
        "retrain": {"enabled": True, "state_dir": str(ctx.work / name / "state"), "after_windows": 2000,
                    "min_windows": 500, "min_interval": 30.0, "epochs": 2, "drift": "none"},
        "threshold": {"save_every": 5.0},
    })
    reached: dict[str, int] = {}
    missed: list[str] = []
    r.feeder.start()
    time.sleep(2.0)
    for j, (point, arg) in enumerate(plan(kills, ctx.quick, rng)):
        if point == "timer":
            d = r.start(restart=j > 0)
            time.sleep(arg)
            r.kill(d)
            reached[point] = reached.get(point, 0) + 1
            continue
        d = r.start(f"{point}:{int(arg)}", restart=j > 0)
        if point == "during_swap" and d.proc.poll() is None:
            time.sleep(1.0)
            r.promote_next()
        if r.died_on_failpoint(d, REACH_S):
            reached[point] = reached.get(point, 0) + 1
        else:
            missed.append(point)
            r.kill(d)
    last = r.start(restart=True)
    time.sleep(3.0)
    out = r.reckon(last)
    out.notes.update(kills=kills, reached=reached, not_reached=missed)
    return out
