"""How the pipeline cuts a big batch into model calls (see ``StreamPipeline.process``):
parts that grow from FIRST_PART while the batch is assembled, at most MAX_PART windows,
and once it is assembled the rest in parts whose last is at most LAST_PART windows.
"""

from __future__ import annotations

FIRST_PART = 32  # windows in the first model call of a big batch; each next part is twice as big
# A batch of at least this many readings is big: scored in parts on the worker thread,
# while the main thread decodes, assembles and judges (~10 us a reading since the JSON
# is read in C, streamvae/core/_jsonrecord.c). A smaller one is scored on the main
# thread: each part's hand-off wakes the worker, then the main thread, which on a busy
# 2-core machine (the broker, the producers) costs more than the overlap of so little
# main-thread work saves. Paced feed, the daemon's polls timed (bench_e2e (e)'s shim):
# at 6,000 records/s (~75 records a poll) produce -> score p50 / p99 15-16 / 36-47 ms
# and 0.72-0.74 of a core at 512, against 20-26 / 64-145 ms and 0.84-0.86 at 64 (3 runs
# each); at 12,000/s (200-550 a poll) p50 28-88 / p99 126-240 ms at 512, 49-83 / 133-210
# at 64 (4 runs each), with 0.89-0.95 of a core against 1.02-1.07. It was 64 before the
# JSON was read in C: then the main thread's share was twice as big. Again on 2026-12-07
# at 14,700 records/s (~100-130 a poll), 1 against 512: the main thread's CPU 29-33
# against 51-52 us a record, but the model ~30% slower a window on the worker, the daemon
# 1.00-1.13 of a core against 0.91-0.92, and p50 15.5, 17.6, 8.4 against 14.3, 14.0, 10.9
# ms (README, "Latency and CPU").
OVERLAP = 512
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
