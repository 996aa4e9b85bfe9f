"""Reading the next poll's records while the model scores the current batch.

kafka-python turns each fetched record into a ``ConsumerRecord`` inside ``poll``, on the
caller's thread (~11 us a record when this was written, ``scripts/bench_e2e.py``'s raw
consume; streamvae.kafka.fastrecords has since cut the reading of a record itself to
~0.65 us). In the daemon's loop that came before each batch, while the scoring worker
had nothing to do: the daemon drained a backlog at ~0.7 of the offline pipeline's rate.
:class:`ReadAhead` lets the daemon parse the next batch while the worker scores this one
(``StreamPipeline.process``'s ``idle``).

Only the fetch is done early, never the group's work: ``fetch`` drains the consumer's
fetch buffer (kafka-python's ``Fetcher.fetch_records``, as ``KafkaConsumer.poll`` does
after its coordinator step), so no rebalance callback can run in the middle of a batch.
The next :meth:`poll` runs ``KafkaConsumer.poll`` as before (coordinator, heartbeat
deadline, the rebalance callbacks) and adds what it returns to the held records.

Call :meth:`fetch` only with a batch in hand (between a poll that returned records and
the next poll): kafka-python's poll returns nothing while the group rebalances, so the
assignment is then the one the batch came from.

The held records moved the consumer's positions. Whoever moves them otherwise (a seek
after a rollback, a rebalance) calls :meth:`drop` first: each held partition still
assigned is sought back to its first held record, so nothing is skipped.

Records can come a batch late, and this module does not change that. When
kafka-python's poll finds records buffered, it returns them and sends the next fetch at
once; the broker answers it a few ms later (once ``fetch_min_bytes`` have come), while
the daemon handles the batch, and the next poll returns that answer without asking for
newer records: what reached the broker after it waits one batch more. At 12,000
records/s (near ``scripts/bench_e2e.py``'s 0.5 x) 45% of the daemon's polls found records
buffered and 37-62% of a batch's records had reached the broker before the poll before
it began; bench_e2e's (e) rows print that share. Tried (2026-12-06, not kept): a poll
that found records buffered took them, then asked the broker for 1 byte and waited for
its answer. No record came late any more, but every poll then waited one round trip to
the broker (poll wall 3.0 -> 4.1-5.2 ms) and the cycles grew: produce -> score p50 over
three runs each 35.4, 36.8, 17.6 ms against 35.7, 26.8, 28.4 before. Sending the next
fetch as soon as a batch is scored cost as much: kafka-python's send waits ~1.3 ms for
its IO thread.

kafka-python's ``_fetcher`` is private: pyproject.toml pins kafka-python to 3.0.x, and
tests/integration/test_readahead.py fails if it moves.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

log = logging.getLogger(__name__)

Batch = dict[Any, list[Any]]  # TopicPartition -> records, in offset order


def lag(consumer: Any, tp: Any, timeout_ms: int = 0) -> int | None:
    """Records of ``tp`` between the consumer's position and the high watermark of its
    last fetch response (no request is sent); None while either is not known."""
    high = consumer.highwater(tp)
    if high is None:
        return None
    try:
        pos = consumer.position(tp, timeout_ms=timeout_ms)
    except KafkaError:
        return None
    return None if pos is None else max(0, high - pos)


class ReadAhead:
    """A consumer's next records, fetched ahead of its next poll (see the module doc).

    ``max_records``: the most one batch (held + polled) brings, ``group.max_poll_records``."""

    def __init__(self, consumer: Any, max_records: int) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self.held: Batch = {}
        self.fetched_ = 0  # records read ahead since start (for tests and the log)

    def count(self) -> int:
        return sum(len(r) for r in self.held.values())

    def fetch(self) -> None:
        """Parse the records the consumer already has buffered, up to one batch less one
        (the next poll brings at least one more, so a batch stays within ``max_records``);
        it waits for nothing. An error is left for the next poll to raise: it leaves the
        positions where they were."""
        room = self.max_records - 1 - self.count()
        if room <= 0:
            return
        try:
            got, _ = self.consumer._fetcher.fetch_records(room, update_offsets=True, timeout_ms=0)
        except KafkaError as e:
            log.debug("read-ahead stopped (%r); the next poll reports it", e)
            return
        for tp, recs in got.items():
            if recs:
                self.held.setdefault(tp, []).extend(recs)
                self.fetched_ += len(recs)

    def poll(self, timeout_ms: int) -> Batch:
        """``KafkaConsumer.poll`` with the held records first; it does not wait when some
        are held. A rebalance inside it (:meth:`drop` from the listener) discards them."""
        held = self.held
        got = self.consumer.poll(timeout_ms=0 if held else timeout_ms, max_records=max(1, self.max_records - self.count()))
        if self.held is not held:  # dropped during the poll: the positions were sought back
            held = {}
        self.held = {}
        if not held:
            return dict(got)
        for tp, recs in got.items():
            held.setdefault(tp, []).extend(recs)
        return held

    def at_end(self) -> bool:
        """Nothing more to read now: no record held, and no lag (:func:`lag`) on any
        partition assigned (~15 us a partition; one whose position or watermark is not
        known yet is not at its end)."""
        return not self.held and all(lag(self.consumer, tp) == 0 for tp in self.consumer.assignment())

    def drop(self) -> None:
        """Forget the held records, seeking each partition still assigned back to its
        first one; before any other seek, and when partitions are revoked."""
        if not self.held:
            return
        assigned = self.consumer.assignment()
        for tp, recs in self.held.items():
            if tp in assigned:
                self.consumer.seek(tp, recs[0].offset)
        self.held = {}


__all__ = ["ReadAhead", "lag"]
