"""How a batch's output and its offsets reach Kafka: ``group.delivery``.

:meth:`Daemon.handle` drives both modes through one interface, in this order::

    outbox = delivery.outbox()                 # exactly once: the batch's transaction begins
    ... the emitter queues alerts, dead letters (and scores) in the outbox ...
    delivery.deliver(outbox, consumer, offsets)  # 1 flush, check every future  [2 offsets, 3 commit]
    ... the lifecycle observes the batch, the partitions' marks move ...
    (checkpoint when due)
    delivery.commit(consumer, offsets, now, drained)  # at least once: stage, commit asynchronously

:class:`AtLeastOnce` (the default) confirms every future, then the daemon checkpoints
and commits the positions, asynchronously, at most every ``group.commit_interval_ms``
(streamvae/kafka/commits.py), and at once when a backlog has just drained (``drained``,
the daemon's call: a short batch after a full one, or a full one that left every
partition at its high watermark), so that the group's committed position, and the
consumer lag its monitoring reads, reaches the end of the log when the daemon does,
not a poll timeout later. A crash between the delivery and the commit makes the
restart score that stretch again; its alerts have the same ids and the same fields
(but ``detected_at``, the time they were computed), and those already on the alerts
topic are not sent again (:meth:`Emitter.load_published`).

:class:`ExactlyOnce` puts everything the outbox sends and the offset commit, with its
``scored_to`` metadata, in one Kafka transaction per batch (KIP-98), the offsets sent
with the consumer's group metadata (KIP-447: a consumer the group has moved past
cannot commit). Nothing is committed asynchronously and nothing waits to be committed
on a revocation. The checkpoint is taken only after the transaction committed, never
ahead of it (``checkpoint_ahead = False``): a restart treats every record before a
checkpoint's ``scored_to`` as delivered. Where a SIGKILL can land:

- before ``commit_transaction`` (failpoints ``after_delivery``, ``before_commit``): the
  restart's ``init_transactions`` (same transactional id) aborts the open transaction;
  the committed offsets and the checkpoint are both of an earlier batch, so
  :meth:`Partitions.resume` re-scores from the checkpoint without emitting up to the
  committed ``scored_to`` and emits the rest, once;
- after the commit, before the next checkpoint (``after_commit``): the committed
  ``scored_to`` is ahead of the checkpoint; that stretch is scored again, not emitted;
- after the checkpoint (``after_checkpoint``): both agree; nothing is read again.

A delivery or commit that fails but can be aborted aborts the transaction and raises
:class:`DeliveryError`: the daemon goes back to its last checkpoint and reads the
batch again. A producer that cannot go on (fenced: another process took this
transactional id; or any other fatal error) raises :class:`TransactionFailed`, and the
daemon exits non-zero.

Retraining samples: a transactional producer sends only inside a transaction, and the
lifecycle must never observe a batch whose transaction may still abort. So it observes a
batch after its commit, and the samples it picks ride in the next batch's transaction
(or, when the feed is quiet, in one of their own); an aborted one keeps them for the
next. A crash loses the samples not yet sent, as at least once may (a lost sample costs
nothing).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Protocol

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.errors import StreamvaeError
from streamvae.kafka.clients import KafkaError, ProducerFencedError
from streamvae.kafka.commits import Commits
from streamvae.kafka.produce import DeliveryError, Outbox, delivery_timeout_ms, make_producer, transactional_id
from streamvae.service import failpoints

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 30.0
VERDICT_MARGIN_S = 5.0  # past the producer's delivery timeout, its verdict on every message is in


class TransactionFailed(StreamvaeError):
    """The transactional producer cannot go on (fenced, or a fatal error): the daemon exits."""


class Delivery(Protocol):
    """What :meth:`Daemon.handle` needs of a delivery mode (see the module doc)."""

    checkpoint_ahead: bool  # may a checkpoint hold records whose offsets are not committed?
    # does start() end a predecessor's open transaction, whose offsets the consumer must not read before?
    fences: bool

    def start(self, k: KafkaConfig, instance_id: str | None, stop: threading.Event) -> Any: ...
    def outbox(self) -> Outbox: ...
    def deliver(self, outbox: Outbox, consumer: Any, offsets: Mapping[Any, Any]) -> None: ...
    def commit(self, consumer: Any, offsets: Mapping[Any, Any], now: float, drained: bool = False) -> None: ...
    def sample(self, topic: str, key: bytes, value: bytes) -> None: ...
    def quiet(self, consumer: Any, now: float) -> None: ...
    def rolled_back(self) -> None: ...
    def close(self, consumer: Any) -> None: ...


def make_delivery(g: GroupConfig, commits: Commits) -> Delivery:
    """The strategy for ``group.delivery``."""
    if g.delivery == "exactly_once":
        return ExactlyOnce(g.id, commits)
    return AtLeastOnce(commits, g.commit_interval_ms / 1000.0)


class AtLeastOnce:
    """Confirm every future; then stage the positions and commit them asynchronously, at
    most every ``interval_s`` while records flow (streamvae/kafka/commits.py).

    A batch counts as not delivered only once the producer has given up on a message
    of it (its ``delivery_timeout_ms``), or the daemon stops: while the broker is away
    the batch waits that long (``verdict_s``). Going back to the checkpoint sooner
    would score the batch again while the producer still retries its first copy,
    which then lands too, and the state that scored the copy again is not the one that
    scored the first: the fallback threshold learns from every partition, in the order
    the polls bring them (a CI run saw such a repeat differ)."""

    checkpoint_ahead = True
    fences = False

    def __init__(self, commits: Commits, interval_s: float, confirm_s: float = DELIVERY_TIMEOUT_S) -> None:
        self.commits = commits
        self.interval_s = interval_s
        self.confirm_s = confirm_s  # the first flush's wait
        self.verdict_s = confirm_s  # set by start(): the producer's delivery timeout, and a little
        self.stop: threading.Event | None = None
        self.producer: Any = None
        self.last_commit = float("-inf")  # the first delivered batch commits at once

    def start(self, k: KafkaConfig, instance_id: str | None, stop: threading.Event) -> Any:
        self.producer = make_producer(k)
        self.verdict_s = max(self.confirm_s, delivery_timeout_ms(k) / 1000.0 + VERDICT_MARGIN_S)
        self.stop = stop
        return self.producer

    def outbox(self) -> Outbox:
        return Outbox(self.producer)

    def deliver(self, outbox: Outbox, consumer: Any, offsets: Mapping[Any, Any]) -> None:
        outbox.confirm(self.confirm_s, self.verdict_s, self.stop)
        failpoints.reach("after_delivery")

    def commit(self, consumer: Any, offsets: Mapping[Any, Any], now: float, drained: bool = False) -> None:
        for tp, om in offsets.items():
            self.commits.stage(tp, om)
        if drained or now - self.last_commit >= self.interval_s:
            self.last_commit = now
            self.commits.commit(consumer, wait=False, now=now)

    def sample(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.send(topic, key=key, value=value)  # fire and forget: a lost sample costs nothing

    def quiet(self, consumer: Any, now: float) -> None:
        if self.commits.pending:
            self.last_commit = now
            if self.commits.commit(consumer):
                failpoints.reach("after_commit")

    def rolled_back(self) -> None:
        self.commits.pending.clear()

    def close(self, consumer: Any) -> None:
        self.commits.commit(consumer)


class ExactlyOnce:
    """One transaction per batch: its records and its offset commit (see the module doc)."""

    checkpoint_ahead = False
    fences = True

    def __init__(self, group_id: str, commits: Commits) -> None:
        self.group_id = group_id
        self.commits = commits
        self.producer: Any = None
        self.transactional_id = ""
        self.samples: list[tuple[str, bytes, bytes]] = []  # observed, not yet in a committed transaction
        self.aborts_ = 0

    def start(self, k: KafkaConfig, instance_id: str | None, stop: threading.Event) -> Any:
        """A transactional producer, its transactions initialised: this fences the producer
        of the process this one replaces and aborts the transaction it left open. A broker
        that does not answer is waited for."""
        self.transactional_id = transactional_id(self.group_id, instance_id)
        self.producer = make_producer(k, transactional_id=self.transactional_id)
        backoff = 0.5
        while not stop.is_set():
            try:
                self.producer.init_transactions()
                break
            except ProducerFencedError as e:
                raise self._fenced(e) from None
            except KafkaError as e:
                if not e.retriable:
                    raise TransactionFailed(f"cannot initialise transactions for {self.transactional_id!r}: {e!r}") from e
                log.warning("initialising transactions failed (%r); retrying in %.1fs", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        log.info("exactly-once delivery: transactional id %s", self.transactional_id)
        return self.producer

    def outbox(self) -> Outbox:
        """The batch's transaction begins; the samples still to send go first."""
        try:
            self.producer.begin_transaction()
        except KafkaError as e:
            raise self._fatal(e) from None
        box = Outbox(self.producer)
        for topic, key, value in self.samples:
            box.send(topic, key, value)
        return box

    def deliver(self, outbox: Outbox, consumer: Any, offsets: Mapping[Any, Any]) -> None:
        """1 flush, check every future; 2 the offsets join the transaction; 3 commit it.
        A failure aborts it (DeliveryError); a producer that cannot go on raises
        TransactionFailed."""
        try:
            outbox.confirm(DELIVERY_TIMEOUT_S)
            failpoints.reach("after_delivery")
            if offsets:
                self.producer.send_offsets_to_transaction(dict(offsets), consumer.group_metadata())
            failpoints.reach("before_commit")
            self.producer.commit_transaction()
        except ProducerFencedError as e:
            raise self._fenced(e) from None
        except (DeliveryError, KafkaError) as e:
            self._abort(e)
            raise DeliveryError(f"transaction aborted: {e}") from e
        self.samples.clear()
        self.commits.record(offsets)
        failpoints.reach("after_commit")

    def commit(self, consumer: Any, offsets: Mapping[Any, Any], now: float, drained: bool = False) -> None:
        """Nothing left: the offsets were committed in the batch's transaction."""

    def sample(self, topic: str, key: bytes, value: bytes) -> None:
        self.samples.append((topic, key, value))

    def quiet(self, consumer: Any, now: float) -> None:
        """Samples left over go in a transaction of their own (tried again next time)."""
        if not self.samples:
            return
        try:
            self.deliver(self.outbox(), consumer, {})
        except DeliveryError as e:
            log.warning("retraining samples not delivered (%s); they go with the next transaction", e)

    def rolled_back(self) -> None:
        """Nothing staged: an aborted transaction took its offsets with it."""

    def close(self, consumer: Any) -> None:
        self.quiet(consumer, 0.0)

    def _abort(self, why: BaseException) -> None:
        self.aborts_ += 1
        try:
            self.producer.abort_transaction()
        except ProducerFencedError as e:
            raise self._fenced(e) from None
        except KafkaError as e:
            raise self._fatal(e, f" after {why}") from None

    def _fenced(self, e: BaseException) -> TransactionFailed:
        return TransactionFailed(f"producer fenced ({e!r}): another process uses transactional id "
                                 f"{self.transactional_id!r} (the same group.id and group.instance_id); stopping")

    def _fatal(self, e: BaseException, when: str = "") -> TransactionFailed:
        return TransactionFailed(f"the transactional producer {self.transactional_id!r} cannot go on ({e!r}{when}); "
                                 "stopping: a restart fences it and carries on from the last committed transaction")


__all__ = ["AtLeastOnce", "DELIVERY_TIMEOUT_S", "Delivery", "ExactlyOnce", "TransactionFailed", "make_delivery"]
