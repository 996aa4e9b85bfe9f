"""Two ways kafka-python 3.0's ``Fetcher.fetch_records`` stalls a live feed, closed.

``fetch_records`` drains the buffered records, sends the next fetches on kafka-python's
IO thread, then waits on the fetches in flight. Measured on a live feed at 12,700
records/s (scripts/bench_e2e.py (e), the daemon's polls timed by its shim):

1. **A poll that sleeps with records in its buffer.** When a fetch response lands while
   the send runs (the IO thread handles it first), its records are buffered, no fetch
   is left in flight, and ``fetch_records`` reports the fetcher idle. ``KafkaConsumer.poll``
   then sleeps ``retry_backoff_ms`` (100 ms) with those records in hand: about one poll
   in 50, a 100 ms stall every second or two.
2. **A wait of 0 ms that ties a batch into a reference cycle.** Asked not to wait
   (``timeout_ms=0``: ``ReadAhead.fetch``, and ``poll`` while records are held, both
   only while the consumer is behind the broker, streamvae/kafka/readahead.py), it
   still waits, and the wait ends in a ``KafkaTimeoutError`` raised and caught inside
   kafka-python. The error's traceback holds the frames it passed through, each frame
   its caller, up to the daemon's batch step: the batch's records, readings and windows
   (~40,000 objects a second) were freed only by the cyclic collector, in young
   collections of 25-57 ms, one a second.

:func:`install` wraps ``fetch_records``: with ``timeout_ms=0`` it drains and sends as
kafka-python does and does not wait; when kafka-python reports idle with no records, it
drains the buffer once more before anyone sleeps. kafka-python 3.0.x only (the version
pinned).
"""

from __future__ import annotations

import functools
from typing import Any

import kafka
from kafka.consumer.fetcher import Fetcher

_ORIGINAL = Fetcher.fetch_records


def supported() -> bool:
    return str(kafka.__version__).startswith("3.0.")


@functools.wraps(_ORIGINAL)
def _fetch_records(self: Any, max_records: int | None = None, update_offsets: bool = True,
                   timeout_ms: int | None = None) -> tuple[dict[Any, list[Any]], bool]:
    if timeout_ms == 0:  # 2: kafka-python's steps, without the wait
        records, partial = self.fetched_records(max_records, update_offsets=update_offsets)
        if not partial:
            self.send_fetches()
        if not records:  # one may have landed during the send
            records, _ = self.fetched_records(max_records, update_offsets=update_offsets)
        if records:
            return records, False
        resetting = self._reset_task is not None and not self._reset_task.is_done
        return records, not (self.in_flight_fetches() or resetting)
    records, idle = _ORIGINAL(self, max_records, update_offsets=update_offsets, timeout_ms=timeout_ms)
    if records or not idle:
        return records, idle
    records, _ = self.fetched_records(max_records, update_offsets=update_offsets)  # 1: landed during the send
    return records, not records


def install() -> bool:
    """Close both (idempotent); False where kafka-python is not 3.0.x."""
    if not supported():
        return False
    Fetcher.fetch_records = _fetch_records
    return True


def uninstall() -> None:
    Fetcher.fetch_records = _ORIGINAL
