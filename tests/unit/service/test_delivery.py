"""The delivery modes' order of steps, without a broker: a stand-in producer records every
call (kafka-python's transactional API) and fails where a test says. What a crash at each
step leaves behind is proven on the real broker (tests/integration/test_exactly_once.py)."""

from __future__ import annotations

from typing import Any

import pytest

from streamvae.config import GroupConfig
from streamvae.kafka.clients import KafkaError, OffsetAndMetadata, ProducerFencedError, isolation
from streamvae.kafka.produce import DeliveryError, transactional_id
from streamvae.kafka.commits import Commits
from streamvae.service.delivery import AtLeastOnce, ExactlyOnce, TransactionFailed, make_delivery


class Future:
    is_done = True
    exception = None

    def failed(self) -> bool:
        return False


class Producer:
    """Records the calls; ``fail[name]`` is raised by that call."""

    def __init__(self, **fail: BaseException) -> None:
        self.calls: list[Any] = []
        self.fail = fail

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail.pop(name)

    def begin_transaction(self) -> None:
        self._call("begin")

    def send(self, topic: str, key: Any = None, value: Any = None) -> Future:
        self._call("send", topic, value)
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        self._call("flush")

    def send_offsets_to_transaction(self, offsets: dict[Any, Any], group_metadata: Any) -> None:
        self._call("offsets", {tp: om.offset for tp, om in offsets.items()}, group_metadata)

    def commit_transaction(self) -> None:
        self._call("commit")

    def abort_transaction(self) -> None:
        self._call("abort")


class Consumer:
    def __init__(self) -> None:
        self.async_commits: list[dict[Any, Any]] = []
        self.callbacks: list[tuple[dict[Any, Any], Any]] = []  # answered when a test says so

    def group_metadata(self) -> str:
        return "generation-7"

    def commit_async(self, offsets: dict[Any, Any], callback: Any) -> None:
        self.async_commits.append({tp: om.offset for tp, om in offsets.items()})
        self.callbacks.append((offsets, callback))

    def answer(self) -> None:
        """The broker confirms every commit sent (kafka-python calls back on its IO thread)."""
        for offsets, callback in self.callbacks:
            callback(offsets, None)
        self.callbacks.clear()


OFFSETS = {"t-0": OffsetAndMetadata(40, '{"scored_to":45}', -1)}


def exactly_once(p: Producer) -> ExactlyOnce:
    d = ExactlyOnce("g", Commits())
    d.producer = p
    return d


def one_batch(d: Any, consumer: Consumer) -> None:
    box = d.outbox()
    box.send("alerts", "pump-1", b"a1")
    box.send("dlq", None, b"d1")
    d.deliver(box, consumer, OFFSETS)


def names(p: Producer) -> list[str]:
    return [c[0] for c in p.calls]


def test_exactly_once_sends_records_then_offsets_with_the_group_metadata_then_commits() -> None:
    p = Producer()
    d = exactly_once(p)
    one_batch(d, Consumer())
    assert names(p) == ["begin", "send", "send", "flush", "offsets", "commit"]
    assert p.calls[4][1:] == ({"t-0": 40}, "generation-7")  # KIP-447: the consumer's generation fences zombies
    assert d.commits.committed == {"t-0": 40} and not d.commits.pending  # nothing left to commit asynchronously
    d.commit(Consumer(), OFFSETS, now=0.0)
    assert names(p)[-1] == "commit" and len(p.calls) == 6


def test_samples_of_a_committed_batch_ride_in_the_next_transaction_and_survive_an_abort() -> None:
    p = Producer()
    d = exactly_once(p)
    d.sample("samples", b"pump-1", b"s1")  # the lifecycle observed a committed batch
    p.fail["commit"] = KafkaError("coordinator moved")
    with pytest.raises(DeliveryError):
        one_batch(d, Consumer())
    assert names(p) == ["begin", "send", "send", "send", "flush", "offsets", "commit", "abort"]
    assert p.calls[1] == ("send", "samples", b"s1")
    assert d.samples, "an aborted transaction keeps its samples for the next"
    p.calls.clear()
    one_batch(d, Consumer())
    assert ("send", "samples", b"s1") in p.calls and not d.samples


def test_quiet_sends_left_over_samples_in_a_transaction_of_their_own() -> None:
    p = Producer()
    d = exactly_once(p)
    d.quiet(Consumer(), 0.0)
    assert not p.calls
    d.sample("samples", b"pump-1", b"s1")
    d.quiet(Consumer(), 0.0)
    assert names(p) == ["begin", "send", "flush", "commit"]


@pytest.mark.parametrize("where", ["flush", "offsets", "commit"])
def test_a_failure_inside_the_transaction_aborts_it_and_nothing_counts_as_committed(where: str) -> None:
    p = Producer(**{where: KafkaError("broker gone")})
    d = exactly_once(p)
    with pytest.raises(DeliveryError):
        one_batch(d, Consumer())
    assert names(p)[-1] == "abort" and names(p).count("commit") == (where == "commit")
    assert d.commits.committed == {} and d.aborts_ == 1


def test_a_fenced_producer_stops_the_daemon_without_aborting() -> None:
    p = Producer(commit=ProducerFencedError())
    d = exactly_once(p)
    with pytest.raises(TransactionFailed, match="another process uses transactional id"):
        one_batch(d, Consumer())
    assert "abort" not in names(p)


def test_a_transaction_that_cannot_be_aborted_stops_the_daemon() -> None:
    p = Producer(commit=KafkaError("lost"), abort=KafkaError("fatal state"))
    d = exactly_once(p)
    with pytest.raises(TransactionFailed, match="cannot go on"):
        one_batch(d, Consumer())


def test_at_least_once_confirms_then_stages_and_commits_asynchronously_at_most_every_interval() -> None:
    p, c = Producer(), Consumer()
    d = AtLeastOnce(Commits(), interval_s=1.0)
    d.producer = p
    one_batch(d, c)
    assert names(p) == ["send", "send", "flush"]  # no transaction, no offsets with the records
    d.commit(c, OFFSETS, now=10.0)
    d.commit(c, {"t-0": OffsetAndMetadata(50, "{}", -1)}, now=10.5)  # within the interval: staged only
    assert c.async_commits == [{"t-0": 40}] and d.commits.pending["t-0"].offset == 50
    c.answer()  # the first one confirmed: none in flight
    d.commit(c, {"t-0": OffsetAndMetadata(60, "{}", -1)}, now=10.6, drained=True)  # a backlog drained: at once
    assert c.async_commits == [{"t-0": 40}, {"t-0": 60}]
    c.answer()
    d.commits.apply_answers()
    assert d.commits.committed["t-0"] == 60 and not d.commits.pending
    d.sample("samples", b"k", b"v")
    assert p.calls[-1] == ("send", "samples", b"v")  # fire and forget
    d.rolled_back()
    assert not d.commits.pending


def test_the_mode_sets_the_strategy_the_isolation_and_a_stable_transactional_id() -> None:
    eo, alo = GroupConfig(id="plant", delivery="exactly_once"), GroupConfig(id="plant")
    assert isinstance(make_delivery(eo, Commits()), ExactlyOnce) and not make_delivery(eo, Commits()).checkpoint_ahead
    assert isinstance(make_delivery(alo, Commits()), AtLeastOnce) and make_delivery(alo, Commits()).checkpoint_ahead
    assert (isolation(eo), isolation(alo)) == ("read_committed", "read_uncommitted")
    # a restart of the same slot has the same id (and fences its predecessor); dynamic members differ per process
    assert transactional_id("plant", "host-3") == transactional_id("plant", "host-3") != transactional_id("plant", "host-4")
    assert transactional_id("plant", None) != transactional_id("plant", None)
