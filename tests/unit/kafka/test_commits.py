"""Commit bookkeeping without a broker: a stand-in consumer records what it was asked to
commit and answers when the test says so (as kafka-python does, later, on its IO thread)."""

from __future__ import annotations

from typing import Any

import pytest

from streamvae.kafka.clients import KafkaError, OffsetAndMetadata
from streamvae.kafka.commits import Commits
from streamvae.kafka.offsets import PartitionOffsets, decode_metadata, encode_metadata


class Consumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sync: list[dict[Any, Any]] = []
        self.waiting: list[tuple[dict[Any, Any], Any]] = []

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        if self.fail:
            raise KafkaError("coordinator not available")
        self.sync.append(dict(offsets))

    def commit_async(self, offsets: dict[Any, Any], callback: Any) -> None:
        self.waiting.append((dict(offsets), callback))

    def answer(self, error: BaseException | None = None) -> None:
        offsets, cb = self.waiting.pop(0)
        cb(offsets, error if error is not None else None)


def om(offset: int) -> Any:
    return OffsetAndMetadata(offset, encode_metadata(offset), -1)


def test_an_asynchronous_commit_counts_only_once_its_answer_is_applied() -> None:
    c, k = Commits(), Consumer()
    c.stage("p0", om(10))
    c.commit(k, wait=False, now=0.0)
    assert "p0" not in c.committed and c.in_flight
    k.answer()
    assert "p0" not in c.committed  # the answer waits for the loop
    assert c.apply_answers() == 1
    assert c.committed == {"p0": 10} and not c.pending and not c.in_flight


def test_one_commit_in_flight_newer_positions_wait_for_the_next() -> None:
    c, k = Commits(), Consumer()
    c.stage("p0", om(10))
    c.commit(k, wait=False, now=0.0)
    c.stage("p0", om(20))
    c.commit(k, wait=False, now=1.0)
    assert len(k.waiting) == 1
    k.answer()
    c.apply_answers()
    assert c.committed == {"p0": 10} and c.pending["p0"].offset == 20  # 20 is still to be committed
    c.commit(k, wait=False, now=2.0)
    k.answer()
    c.apply_answers()
    assert c.committed == {"p0": 20} and not c.pending


def test_an_overdue_answer_does_not_block_commits_for_ever() -> None:
    c, k = Commits(timeout_ms=1000), Consumer()
    c.stage("p0", om(10))
    c.commit(k, wait=False, now=0.0)
    c.commit(k, wait=False, now=1.0)
    assert len(k.waiting) == 1
    c.commit(k, wait=False, now=2.5)  # twice the timeout passed
    assert len(k.waiting) == 2


def test_a_failed_commit_stays_pending_and_is_counted() -> None:
    c, k = Commits(), Consumer()
    c.stage("p0", om(10))
    c.commit(k, wait=False, now=0.0)
    k.answer(KafkaError("rebalancing"))
    c.apply_answers()
    assert c.failures_ == 1 and c.pending["p0"].offset == 10 and "p0" not in c.committed
    assert c.commit(Consumer(fail=True)) is False and c.failures_ == 2
    k2 = Consumer()
    assert c.commit(k2) is True and [(tp, o.offset) for tp, o in k2.sync[0].items()] == [("p0", 10)]
    assert c.committed == {"p0": 10} and not c.pending


def test_a_late_answer_never_moves_a_partition_back() -> None:
    c, k = Commits(), Consumer()
    c.stage("p0", om(10))
    c.commit(k, wait=False, now=0.0)
    c.stage("p0", om(20))
    c.commit(k)  # synchronous, confirmed at once
    k.answer()
    c.apply_answers()
    assert c.committed == {"p0": 20}


def test_revocation_commits_only_the_revoked_partitions() -> None:
    c, k = Commits(), Consumer()
    c.stage("p0", om(10))
    c.stage("p1", om(7))
    c.on_revoked(k, ["p1"])
    assert [set(o) for o, _ in k.waiting] == [{"p1"}]
    k.answer()
    c.apply_answers()
    assert c.committed == {"p1": 7} and set(c.pending) == {"p0"} and not c.in_flight


@pytest.mark.parametrize("keep, feed, expected", [
    (0, [("a", 0), ("a", 1)], 2),  # nothing kept: the next offset
    (2, [("a", 0), ("b", 1), ("a", 2), ("a", 3)], 1),  # b's open window still needs offset 1
    (2, [("a", 0), ("a", 1), ("a", 2)], 1),  # a keeps its last two
])
def test_the_commit_position_is_the_oldest_offset_an_open_window_needs(keep: int, feed: list[tuple[str, int]],
                                                                        expected: int) -> None:
    o = PartitionOffsets(keep=keep)
    for ent, off in feed:
        o.note("p0", ent, off, ts=float(off))
    assert o.position("p0", next_offset=feed[-1][1] + 1) == expected


def test_commit_metadata_round_trips_and_bad_metadata_reads_as_empty() -> None:
    assert decode_metadata(encode_metadata(12, "abc")) == {"scored_to": 12, "ck": "abc"}
    assert decode_metadata(None) == {} and decode_metadata("[1]") == {} and decode_metadata("{") == {}
