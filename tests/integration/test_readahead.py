"""ReadAhead (streamvae/kafka/readahead.py) on the real broker: records read ahead of a
poll come first in the next batch, none is skipped or read twice, a batch stays within
max_records, drop() and a rebalance read the held records again; a poll that finds
records buffered sends the next fetch with them only while the consumer is behind the
broker; and kafka-python's private fetch step it uses is still there (pyproject.toml pins kafka-python 3.0.x)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.kafka.clients import make_consumer
from streamvae.kafka.readahead import ReadAhead, behind
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


def values(b: dict[Any, list[Any]]) -> list[bytes]:
    return [r.value for recs in b.values() for r in recs]


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
        assert values(got) == [b"late"]
        assert ahead.at_end()
    finally:
        c.close(autocommit=False)


def produce(bootstrap: str, topic: str, values: list[bytes], one_batch_each: bool = False) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    for v in values:
        sent = p.send(topic, value=v, partition=0)
        if one_batch_each:
            sent.get(30)  # acknowledged before the next is sent: a record batch of its own
    p.flush(30)
    p.close()


def answered(c: Any, timeout: float = 10.0) -> None:
    """Send a fetch now and wait until the broker's answer is buffered, not parsed: the
    next poll finds records buffered, as after a read ahead or a poll that sent early."""
    c._fetcher.send_fetches()
    deadline = time.monotonic() + timeout
    while not c._fetcher._completed_fetches and time.monotonic() < deadline:
        time.sleep(0.005)
    assert c._fetcher._completed_fetches, "the broker did not answer the fetch"


def fetch_sent(c: Any) -> bool:
    """A fetch is in flight, or its answer is buffered. In this order: the IO thread
    buffers an answer before it clears the node's pending fetch."""
    return bool(c._fetcher._nodes_with_pending_fetch_requests) or bool(c._fetcher._completed_fetches)


def plain_consumer(broker: Any, topic: str, **fetch: int) -> Any:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", **fetch)
    c.assign([TopicPartition(topic, 0)])
    return c


def poll_until(ahead: ReadAhead, n: int) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(100):
        got += values(ahead.poll(500))
        if len(got) >= n:
            break
    return got


def test_a_caught_up_poll_that_finds_records_buffered_sends_no_fetch_with_them(broker: Any) -> None:
    """kafka-python would send the next fetch with them; the broker would answer it while
    the batch is handled, and the next poll would return records a batch old (the module
    doc). Here that poll asks the broker itself, and what came meanwhile is not lost."""
    t = Topics(broker.bootstrap, partitions=1, prefix="fresh-")
    produce(broker.bootstrap, t.input, [b"a%d" % i for i in range(20)])
    c = plain_consumer(broker, t.input, fetch_min_bytes=8192, fetch_max_wait_ms=150)  # the daemon's defaults
    try:
        ahead = ReadAhead(c, MAX)
        assert poll_until(ahead, 20) == [b"a%d" % i for i in range(20)]
        produce(broker.bootstrap, t.input, [b"b%d" % i for i in range(20)])
        answered(c)
        got = ahead.poll(500)
        assert values(got) == [b"b%d" % i for i in range(20)]
        assert not behind(c._fetcher)
        assert not fetch_sent(c)
        ahead.fetch()  # a read ahead of a caught-up consumer sends none either
        assert not fetch_sent(c) and not ahead.held
        produce(broker.bootstrap, t.input, [b"c%d" % i for i in range(5)])
        assert poll_until(ahead, 5) == [b"c%d" % i for i in range(5)]
    finally:
        c.close(autocommit=False)


def test_a_poll_behind_the_broker_sends_the_next_fetch_with_its_records(broker: Any) -> None:
    """A backlog is read with a fetch in flight, as kafka-python does: each answer here
    holds one record batch (fetch_max_bytes 1), and the broker holds 30."""
    t = Topics(broker.bootstrap, partitions=1, prefix="fresh-")
    produce(broker.bootstrap, t.input, [b"%d" % i for i in range(30)], one_batch_each=True)
    c = plain_consumer(broker, t.input, fetch_min_bytes=1, fetch_max_bytes=1, max_partition_fetch_bytes=1)
    try:
        ahead = ReadAhead(c, MAX)
        first = poll_until(ahead, 1)
        answered(c)
        got = values(ahead.poll(500))
        assert got and behind(c._fetcher)
        assert fetch_sent(c)
        rest = poll_until(ahead, 30 - len(first) - len(got))
        assert first + got + rest == [b"%d" % i for i in range(30)]
    finally:
        c.close(autocommit=False)
