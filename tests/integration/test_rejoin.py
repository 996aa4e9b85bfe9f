"""kafka-python 3.0's group leader left with its old assignment for good, on the real
broker, and streamvae/kafka/rejoin.py closing it.

A consumer, alone in its group (so its leader), reads a 1-partition topic; the topic
then gets 2 more partitions. The consumer learns of them (``need_rejoin`` turns True),
and a poll with no time left (``timeout_ms=0``) starts the rejoin and returns before the
broker answers. Once the join has finished in kafka-python's IO thread, the consumer
polls as the daemon does (200 ms a poll) and a record is produced to each partition.
With rejoin.py (``make_consumer`` installs it) the next polls rejoin and read all three;
kafka-python alone keeps partition 0 only, and the records of partitions 1 and 2 are
never read.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewPartitions

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.kafka import rejoin
from streamvae.kafka.clients import make_consumer
from streamvae.testing.topics import Topics

ADDED = 2  # partitions added under the joined consumer
POLL_MS, POLLING_S = 200, 6.0  # the daemon's poll_timeout_ms; how long the consumer polls after the join


@pytest.fixture
def topics(broker: Any) -> Topics:
    return Topics(broker.bootstrap, partitions=1, prefix="rejoin-")


def wait_for(what: str, done: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s: the setup is wrong, not the code"
        time.sleep(0.02)


def partitions_after_a_join_between_two_polls(t: Topics, fixed: bool) -> tuple[list[int], list[int], bool]:
    """Partitions are added under a joined consumer and its rejoin finishes between two
    polls (above). Returns the partitions assigned after ``POLLING_S`` of polls, those it
    read a record from, and whether the join was still unapplied then."""
    c = make_consumer(KafkaConfig(bootstrap_servers=t.bootstrap), GroupConfig(id=t.group, auto_offset_reset="earliest"),
                      [t.input])
    if not fixed:
        rejoin.uninstall()
    admin = KafkaAdminClient(bootstrap_servers=t.bootstrap)
    p = KafkaProducer(bootstrap_servers=t.bootstrap)
    co = c._coordinator
    try:
        deadline = time.monotonic() + 60
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(timeout_ms=POLL_MS)
        assert [tp.partition for tp in c.assignment()] == [0], "not joined: the setup is wrong, not the code"
        admin.create_partitions({t.input: NewPartitions(1 + ADDED)})
        wait_for("the consumer learning of the new partitions",
                 lambda: (c.topics(), len(c.partitions_for_topic(t.input) or ()) == 1 + ADDED)[1])
        c.poll(timeout_ms=0)  # starts the join, and returns before the broker answers
        assert co._join_task is not None, "no join in flight: the setup is wrong, not the code"
        wait_for("the join finishing", lambda: co._join_task is None or co._join_task.is_done)
        for part in range(1 + ADDED):
            p.send(t.input, b"%d" % part, partition=part)
        p.flush(30)
        read: set[int] = set()
        until = time.monotonic() + POLLING_S
        while time.monotonic() < until:
            for tp, recs in c.poll(timeout_ms=POLL_MS).items():
                if recs:
                    read.add(tp.partition)
        stuck = co._join_task is not None and co._join_task.is_done
        return sorted(tp.partition for tp in c.assignment()), sorted(read), stuck
    finally:
        rejoin.install()
        p.close()
        admin.close()
        c.close(autocommit=False)


def test_a_join_that_finishes_between_two_polls_is_applied(topics: Topics) -> None:
    assigned, read, stuck = partitions_after_a_join_between_two_polls(topics, fixed=True)
    assert assigned == [0, 1, 2]
    assert read == [0, 1, 2]
    assert not stuck


def test_kafka_python_alone_keeps_the_old_assignment(topics: Topics) -> None:
    """The wedge rejoin.py closes is kafka-python's. If this fails, kafka-python no longer
    has it and rejoin.py can go."""
    assigned, read, stuck = partitions_after_a_join_between_two_polls(topics, fixed=False)
    assert assigned == [0]
    assert read == [0]
    assert stuck
