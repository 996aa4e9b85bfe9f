"""How the pipeline cuts a big batch into model calls (see ``StreamPipeline.process``):
parts that grow from FIRST_PART while the batch is assembled, at most MAX_PART windows,
and once it is assembled the rest in parts whose last is at most LAST_PART windows.
"""

from __future__ import annotations

FIRST_PART = 32  # windows in the first model call of a big batch; each next part is twice as big
# A batch of at least this many readings is big: scored in parts on the worker thread.
# Two first parts, so that even the smallest big batch overlaps one part's model call
# with the next one's assembly. A live feed at half the daemon's capacity polls a few
# hundred records at a time (bench_e2e (e)): scored on the main thread, one after the
# other, these made each poll's cycle (and so the next poll's batch) longer, ~75 ms
# produce -> score p50 at 14,000 records/s, against ~35 ms in parts. Below it (a slow
# feed) a thread hand-off costs more than the overlap saves.
OVERLAP = 2 * FIRST_PART
LAST_PART = 64  # windows in the last model call of a big batch, at most: the main thread judges it alone
# Windows in one model call, at most. The windows still unscored when a big batch is
# assembled go in parts of this size, so the main thread runs each part's thresholds and
# episodes while the model scores the next, and only the last part's wait on them
# (bench_e2e (b)). And a huge record (a block of 10,000 readings) is scored in parts no
# bigger than an ordinary poll's, so its arrays are no bigger either: the allocator keeps
# a freed peak it cannot give back (scripts/bench_memory.py).
MAX_PART = 512


def rest_parts(lo: int, hi: int) -> list[tuple[int, int]]:
    """Windows lo..hi-1, the rest of a big batch once it is assembled, as model calls:
    parts of MAX_PART, and a last one of at most LAST_PART, so that the model is busy
    until the main thread has little left to judge.

    >>> rest_parts(0, 1100)
    [(0, 512), (512, 1024), (1024, 1036), (1036, 1100)]
    >>> rest_parts(0, 100)
    [(0, 36), (36, 100)]
    >>> rest_parts(0, 64)
    [(0, 64)]
    """
    cuts = list(range(lo, hi, MAX_PART)) + [hi]
    if hi - cuts[-2] > LAST_PART:
        cuts.insert(-1, hi - LAST_PART)
    return list(zip(cuts, cuts[1:]))
