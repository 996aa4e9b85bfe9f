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

Records came a batch late, and :func:`fetch_when_behind` stops it. kafka-python's poll,
when it finds records buffered, returns them and sends the next fetch at once; the
broker answers it a few ms later (once ``fetch_min_bytes`` have come), while the daemon
handles the batch, and the next poll returns that answer, a few records that are a batch
old by then, and sends the next fetch at once again: what reached the broker after the
answer waits one batch more. Once in this state (after one read ahead, one backlog) the
consumer stayed in it as long as a batch took longer than the broker's answer, so at half
of the daemon's capacity whole runs went this way: at 16,000 records/s, 16-64 % of the
records came a batch late in 3 of 8 runs, and produce -> score p50 was 19.7-37.5 ms in
those against 9.3-16.5 in the others (2026-12-07, bench_e2e (e)'s harness). With
``fetch_when_behind``, at most 3.1 % came late in each of 13 runs that day (p50 9.0-26.2
ms; README "Latency and CPU"). It sends that early fetch only while the broker held more
than the consumer has read (the last answer's high watermark past a partition's
position): a backlog is still read with a fetch always in flight, and a consumer that
has caught up asks again at its next poll, which waits for the broker's answer (a round
trip, ~2 ms of wall time here) and gets everything that came meanwhile.

Tried before (2026-12-06, not kept): a poll that found records buffered took them, then
asked the broker for 1 byte and waited for its answer. No record came late any more, but
every poll then waited one round trip to the broker (poll wall 3.0 -> 4.1-5.2 ms) and the
cycles grew: produce -> score p50 over three runs each 35.4, 36.8, 17.6 ms against 35.7,
26.8, 28.4 before. Sending the next fetch as soon as a batch is scored cost as much:
kafka-python's send waits ~1.3 ms for its IO thread.

kafka-python's ``_fetcher`` is private: pyproject.toml pins kafka-python to 3.0.x, and
tests/integration/test_readahead.py fails if it moves.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

from streamvae.kafka import stall

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


def behind(fetcher: Any) -> bool:
    """Some partition assigned and not paused is behind the broker as far as the fetcher
    knows: its position is below the high watermark of the last answer, or either is not
    known yet (then as kafka-python does: fetch)."""
    for state in list(fetcher._subscriptions.assignment.values()):
        if state.paused:
            continue
        high, pos = state.highwater, state.position
        if high is None or pos is None or pos.offset < high:
            return True
    return False


def fetch_when_behind(consumer: Any) -> None:
    """Make ``consumer``'s fetch step (kafka-python's ``Fetcher.fetch_records``, run by
    every ``poll`` and by :meth:`ReadAhead.fetch`) send a fetch without waiting only while
    :func:`behind`: records buffered are returned as before, and the next fetch is sent
    with them only when the broker holds more; with nothing buffered, a call that may
    wait sends and waits as before, and one that may not (``timeout_ms`` 0) sends only
    when behind. See the module doc. Not done where kafka-python is not the 3.0.x this
    reaches into (:func:`streamvae.kafka.stall.supported`)."""
    if not stall.supported():
        return
    fetcher = consumer._fetcher
    fetch_records = fetcher.fetch_records

    def fetch_fresh(max_records: int | None = None, update_offsets: bool = True,
                    timeout_ms: int | None = None) -> tuple[Batch, bool]:
        records, partial = fetcher.fetched_records(max_records, update_offsets=update_offsets)
        if records:
            if not partial and behind(fetcher):
                fetcher.send_fetches()
            return records, False
        if timeout_ms == 0 and not behind(fetcher):
            return records, False
        got: tuple[Batch, bool] = fetch_records(max_records, update_offsets=update_offsets, timeout_ms=timeout_ms)
        return got

    fetcher.fetch_records = fetch_fresh


class ReadAhead:
    """A consumer's next records, fetched ahead of its next poll (see the module doc).

    ``max_records``: the most one batch (held + polled) brings, ``group.max_poll_records``."""

    def __init__(self, consumer: Any, max_records: int) -> None:
        fetch_when_behind(consumer)
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


__all__ = ["ReadAhead", "behind", "fetch_when_behind", "lag"]
