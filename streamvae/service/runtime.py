"""The interpreter and allocator settings of the daemon's batch loop."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from typing import Any

from streamvae.core.clock import Clock


def settle_runtime() -> None:
    """The interpreter's settings for the batch loop; call once start-up is done.

    Garbage collection: take what start-up left (TensorFlow, Keras, the model: ~340k
    objects) out of the collector's reach: every full collection scanned them all, a
    ~180 ms stop every few polls while a backlog drains (8 in 200k records,
    scripts/bench_e2e.py); later collections see only what the loop keeps. And collect
    the young generation every 50,000 allocations instead of 700: a batch makes ~3
    short-lived objects per record (reading, window, scored window), none in a cycle,
    and each early collection walked them while they were still in use (offline
    pipeline ~2% faster, same script).

    GIL: a thread waiting for the GIL gets it after at most 0.1 ms instead of 5 ms. While
    the main thread assembles windows (pure Python), the scoring worker needs the GIL
    between the model's NumPy calls (about 50 a part; each computes with the GIL
    released, see ``StreamPipeline``), and with long slices it waited at each, idle.
    Measured with scripts/bench_e2e.py (b)'s offline pipeline, 100k records: the
    worker's wall time per window against its CPU time was 42.6 vs 28.2 us at 1 ms,
    38.4 vs 29.0 at 0.1 ms (the offline / model-only rate 0.65 -> 0.74 with the scorer's
    chunks of 128; 5 ms gave 0.72 -> 0.74 at 1 ms before the C tail made the model
    faster). Shorter slices (20 us) measured within noise of 0.1 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.0001)
    bound_heap()


def _libc(name: str) -> Any:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc: nothing to tune or give back this way
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 2 << 20  # bytes; a poll's biggest arrays (2,000 windows of W*F=256 float32) are 2 MB


def bound_heap() -> None:
    """Allocations of ``MMAP_THRESHOLD`` bytes or more get pages of their own, given back
    when freed. glibc's default threshold starts at 128 KB and rises to the biggest block
    freed (up to 32 MB): after one huge record (a block of 5,000 readings: arrays of
    5-10 MB) every later array up to that size came from the heap, which the next
    batches' long-lived objects pinned. The hostile run of scripts/bench_memory.py kept
    8% more resident memory than the clean one; with this and model calls of at most 512
    windows (streamvae/core/pipeline.py), 4%. A fixed 128 KB gave 4% too, but scored ~10%
    slower: every part's temporary arrays were mapped and faulted in again."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        # fixing one threshold stops glibc adjusting the other: keep its rule (trim at
        # twice the mmap threshold), or the heap's top is given back and faulted in again
        # on every batch; MemoryTrim gives the rest back when the feed goes quiet
        _MALLOPT(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
BIG_BATCH_BYTES = 4_000_000  # a poll that brought more than this gives its memory back after it
TRIM_EVERY_S = 10.0
QUIET_TRIM_EVERY_S = 1.0


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``). After a
    batch of huge records (blocks of thousands of readings, 40,000 feature names) the
    allocator keeps the freed peak mapped; without this the daemon's resident memory
    stays at the biggest batch it ever saw (scripts/bench_memory.py)."""
    if _TRIM is not None:
        _TRIM(0)


class MemoryTrim:
    """When to give memory back: after a batch of more than ``BIG_BATCH_BYTES``, at most
    every ``TRIM_EVERY_S`` (the call takes a few milliseconds on a big heap), and when the
    feed goes quiet after batches ran, at most every ``QUIET_TRIM_EVERY_S``: a quiet feed
    costs the loop nothing to wait for, and a burst's memory should not stay mapped for
    up to 10 s after it (scripts/bench_memory.py reads memory 5 s after the drain)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = clock.monotonic()
        self.due = False  # batches ran since memory was last given back

    def after_batch(self, nbytes: int) -> None:
        self.due = True
        if nbytes > BIG_BATCH_BYTES:
            self.now(TRIM_EVERY_S)

    def quiet(self) -> None:
        if self.due:
            self.now(QUIET_TRIM_EVERY_S)

    def now(self, every: float = TRIM_EVERY_S) -> None:
        if self.clock.monotonic() - self.last >= every:
            self.last = self.clock.monotonic()
            self.due = False
            give_back_memory()
