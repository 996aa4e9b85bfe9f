"""ReadAhead (streamvae/kafka/readahead.py) on the real broker: records read ahead of a
poll come first in the next batch, none is skipped or read twice, a batch stays within
max_records, drop() and a rebalance read the held records again; and kafka-python's
private fetch step it uses is still there (pyproject.toml pins kafka-python 3.0.x)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from kafka import KafkaProducer

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.kafka.clients import make_consumer
from streamvae.kafka.readahead import ReadAhead
from streamvae.testing.topics import Topics

RECORDS = 6000
MAX = 500


@pytest.fixture
def topics(broker: Any) -> Topics:
    t = Topics(broker.bootstrap, partitions=2, prefix="ahead-")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    for i in range(RECORDS):
        p.send(t.input, value=b"%d" % i, partition=i % 2)
    p.flush(30)
    p.close()
    return t


class Listener:
    """The daemon's part of the rebalance protocol: drop what was read ahead on revoke."""

    def __init__(self) -> None:
        self.ahead: ReadAhead | None = None
        self.revoked = 0

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self.revoked += 1
        if self.ahead is not None:
            self.ahead.drop()

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        pass


def consumer(t: Topics, listener: Any = None) -> Any:
    g = GroupConfig(id=t.group, max_poll_records=MAX, auto_offset_reset="earliest")
    c = make_consumer(KafkaConfig(bootstrap_servers=t.bootstrap), g, [t.input], listener=listener)
    # The topic's partitions known before the first join: kafka-python may join with
    # metadata that lacks a topic created a moment ago ("No partition metadata for
    # topic"), and the member then held no partition for the 20 s of polls that followed
    # (1 run in ~30, seen under load).
    assert c.partitions_for_topic(t.input) == {0, 1}
    return c


def batches(ahead: ReadAhead, until: int) -> Iterator[dict[Any, list[Any]]]:
    """Polls until ``until`` records came, reading ahead after each (as the daemon does
    while the model scores)."""
    seen = 0
    for _ in range(400):
        b = ahead.poll(200)
        seen += sum(len(r) for r in b.values())
        yield b
        if b:  # as the daemon: only while a batch is in hand (the group is stable then)
            ahead.fetch()
        if seen >= until:
            return


def first_batch(ahead: ReadAhead) -> dict[Any, list[Any]]:
    """The first poll that brings records: the first ones may return nothing while the
    consumer joins the group, and reading ahead needs a batch in hand."""
    for _ in range(100):
        b = ahead.poll(200)
        if b:
            return b
    raise AssertionError("no record came in 100 polls")


def read_ahead(ahead: ReadAhead, timeout: float = 10.0) -> None:
    """``ahead.fetch()`` until it holds records. It parses only what the consumer has
    buffered and waits for nothing: right after a poll that drained the buffer, the fetch
    that poll sent may still be in flight (how often depends on scheduling alone)."""
    deadline = time.monotonic() + timeout
    ahead.fetch()
    while not ahead.held and time.monotonic() < deadline:
        time.sleep(0.01)
        ahead.fetch()


def offsets(b: dict[Any, list[Any]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in recs] for tp, recs in b.items()}


def test_records_read_ahead_come_first_and_none_is_skipped_or_read_twice(topics: Topics) -> None:
    c = consumer(topics)
    try:
        ahead = ReadAhead(c, MAX)
        got: dict[int, list[int]] = {0: [], 1: []}
        for b in batches(ahead, RECORDS):
            assert sum(len(r) for r in b.values()) <= MAX
            for p, offs in offsets(b).items():
                got[p].extend(offs)
        assert got == {p: list(range(RECORDS // 2)) for p in (0, 1)}  # each once, in order
        assert ahead.fetched_ > RECORDS // 2  # most records were parsed ahead of their poll
    finally:
        c.close(autocommit=False)


def test_drop_reads_the_held_records_again(topics: Topics) -> None:
    c = consumer(topics)
    try:
        ahead = ReadAhead(c, MAX)
        first = offsets(first_batch(ahead))
        read_ahead(ahead)
        held = {tp.partition: [r.offset for r in recs] for tp, recs in ahead.held.items()}
        assert held, "nothing was read ahead"
        ahead.drop()
        assert ahead.held == {}
        after: dict[int, list[int]] = {}
        for _ in range(50):
            for p, offs in offsets(ahead.poll(500)).items():
                after.setdefault(p, []).extend(offs)
            if set(held) <= set(after):
                break
        for p, offs in held.items():
            assert after[p][0] == offs[0]  # from the first held record again
            assert after[p][0] == first.get(p, [-1])[-1] + 1
    finally:
        c.close(autocommit=False)


def test_a_rebalance_while_records_are_held_skips_none_of_them(topics: Topics) -> None:
    """A second member joins while the first holds records read ahead: the first's
    listener drops them, and for each partition it keeps it reads on without a gap."""
    listener = Listener()
    a = consumer(topics, listener)
    b = None
    try:
        ahead = listener.ahead = ReadAhead(a, MAX)
        seen: dict[int, list[int]] = {0: [], 1: []}
        for p, offs in offsets(first_batch(ahead)).items():
            seen[p].extend(offs)
        read_ahead(ahead)
        assert ahead.held
        b = consumer(topics)
        b.poll(timeout_ms=0)  # joins: the group rebalances at a's next poll
        for _ in range(100):
            got = ahead.poll(500)
            if listener.revoked:  # nothing held from before the rebalance of a partition a lost
                assert set(got) <= a.assignment(), (got.keys(), a.assignment())
            for p, offs in offsets(got).items():
                seen[p].extend(offs)
            b.poll(timeout_ms=0)
            if listener.revoked and len(a.assignment()) == 1:
                break
            if got:  # as the daemon: only while a batch is in hand
                ahead.fetch()
        assert listener.revoked and len(a.assignment()) == 1
        for _ in range(20):  # a little more from the partition a kept
            got = ahead.poll(200)
            for p, offs in offsets(got).items():
                seen[p].extend(offs)
            if got:
                ahead.fetch()
        kept = next(iter(a.assignment())).partition
        assert seen[kept] == list(range(len(seen[kept]))) and len(seen[kept]) > MAX  # no gap, nothing twice
    finally:
        a.close(autocommit=False)
        if b is not None:
            b.close(autocommit=False)


def test_at_end_only_once_every_partition_is_read_to_its_high_watermark(topics: Topics) -> None:
    c = consumer(topics)
    try:
        ahead = ReadAhead(c, MAX)
        seen, ends = 0, []
        for b in batches(ahead, RECORDS):  # reading ahead after each batch, as the daemon
            seen += sum(len(r) for r in b.values())
            ends.append(ahead.at_end())
        assert seen == RECORDS
        assert not any(ends[:-1]) and ends[-1]  # at its end only after the last record
        ahead.fetch()
        assert ahead.at_end()  # nothing came since
        p = KafkaProducer(bootstrap_servers=topics.bootstrap)
        p.send(topics.input, value=b"late", partition=1)
        p.flush(30)
        p.close()
        got = {}
        for _ in range(50):  # the next fetch learns the new watermark and brings the record
            got = ahead.poll(200)
            if got:
                break
        assert [r.value for recs in got.values() for r in recs] == [b"late"]
        assert ahead.at_end()
    finally:
        c.close(autocommit=False)
