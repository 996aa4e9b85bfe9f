"""A consumer poll that sleeps while records wait in its buffer: kafka-python 3.0's race, closed.

kafka-python 3.0's ``Fetcher.fetch_records`` drains the buffered records, then sends
the next fetches on its IO thread, then waits on the fetches in flight. When a fetch
response lands while that send runs (the IO thread handles it first), its records are
buffered, no fetch is left in flight, and ``fetch_records`` reports the fetcher idle:
nothing to wait on. ``KafkaConsumer.poll`` then sleeps ``retry_backoff_ms`` (100 ms)
with the records in its buffer. On a live feed at 12,700 records/s (scripts/bench_e2e.py
(e)) that hit one poll in ~50: a 100 ms stall every second or two, most of the
produce -> score p99.

:func:`install` wraps ``fetch_records``: when it reports idle with no records, the
buffer is drained once more before anyone sleeps. It costs one look at an empty buffer
on a poll that has nothing else to do. kafka-python 3.0.x only (the version pinned).
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
    records, idle = _ORIGINAL(self, max_records, update_offsets=update_offsets, timeout_ms=timeout_ms)
    if records or not idle:
        return records, idle
    records, _ = self.fetched_records(max_records, update_offsets=update_offsets)  # landed during the send
    return records, not records


def install() -> bool:
    """Close the race (idempotent); False where kafka-python is not 3.0.x."""
    if not supported():
        return False
    Fetcher.fetch_records = _fetch_records
    return True


def uninstall() -> None:
    Fetcher.fetch_records = _ORIGINAL
