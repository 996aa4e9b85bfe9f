"""Kafka for the command-line tools (``streamvae simulate``, ``streamvae alerts``).

A broker that cannot be reached is a :class:`BrokerError` with one clear line after a
short bootstrap timeout, not a minute of retries and a traceback; one that refuses the
credentials or whose certificate is not trusted, a ``KafkaAccessError`` at once
(:func:`~streamvae.kafka.clients.check_access`). :class:`Publisher`
sends with acks=all and counts what the broker acknowledged; :class:`TopicReader` reads
every partition of one topic without a consumer group, so it commits nothing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any, NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamvae.config import KafkaConfig
from streamvae.errors import StreamvaeError
from streamvae.kafka.clients import check_access, connection_args, quiet_kafka

log = logging.getLogger(__name__)


class BrokerError(StreamvaeError):
    """The broker cannot be reached, or stopped acknowledging."""


def _unreachable(k: KafkaConfig, timeout_s: float, e: Exception) -> BrokerError:
    for hostport in k.bootstrap_servers.split(","):
        host = hostport.rsplit(":", 1)[0].strip("[]")
        try:
            socket.getaddrinfo(host, None)
        except OSError:
            return BrokerError(f"cannot resolve Kafka host {host!r} (bootstrap {k.bootstrap_servers}); check --bootstrap")
    return BrokerError(
        f"cannot reach a Kafka broker at {k.bootstrap_servers} within {timeout_s:g} s ({type(e).__name__}); "
        "is it running? (scripts/kafka start prints its address)"
    )


class Publisher:
    """acks=all, retries, one request in flight (records of one key stay in order)."""

    def __init__(self, k: KafkaConfig, connect_timeout_s: float = 10.0, linger_ms: int = 10) -> None:
        self.bootstrap = k.bootstrap_servers
        self.acked = 0
        self.failed = 0
        self.first_error: BaseException | None = None
        check_access(k, connect_timeout_s)
        try:
            with quiet_kafka():
                self._p = KafkaProducer(
                    acks="all", linger_ms=linger_ms, retries=2_147_483_647, max_in_flight_requests_per_connection=1,
                    delivery_timeout_ms=max(k.request_timeout_ms + 5_000, 60_000), max_block_ms=30_000,
                    bootstrap_timeout_ms=int(connect_timeout_s * 1000), **connection_args(k),
                )
        except KafkaError as e:
            raise _unreachable(k, connect_timeout_s, e) from e

    def _ok(self, _meta: Any) -> None:
        self.acked += 1

    def _err(self, e: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = e

    def check(self) -> None:
        """Raise BrokerError if any message failed so far."""
        if self.failed:
            raise BrokerError(f"{self.failed} messages not acknowledged by {self.bootstrap} (first: {self.first_error!r})")

    def ensure_topic(self, topic: str) -> int:
        """Wait until ``topic`` has partitions (a broker with auto-create makes it now); their count."""
        try:
            with quiet_kafka():  # kafka-python logs "not found" at ERROR while the topic is being created
                return len(self._p.partitions_for(topic))
        except KafkaError as e:
            raise BrokerError(f"topic {topic!r} does not exist at {self.bootstrap} and the broker did not create it "
                              f"({type(e).__name__}); create it first") from e

    def send(self, topic: str, key: str, value: bytes) -> None:
        try:
            fut = self._p.send(topic, key=key.encode(), value=value)
        except KafkaError as e:
            raise BrokerError(f"cannot send to topic {topic!r} at {self.bootstrap}: {e}") from e
        fut.add_callback(self._ok)
        fut.add_errback(self._err)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every message sent so far is acknowledged; BrokerError if any is not."""
        try:
            self._p.flush(timeout=timeout_s)
        except KafkaError as e:
            raise BrokerError(f"flush to {self.bootstrap} failed: {e}") from e
        self.check()

    def close(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(KafkaError):
            self._p.close(timeout=timeout_s)


class Message(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TopicReader:
    """Every partition of ``topic``, from the beginning or from the end; no group, no commits.

    Only committed records (``read_committed``): a daemon in ``group.delivery =
    "exactly_once"`` writes alerts, dead letters and samples in transactions, and what an
    aborted one holds was never delivered. On a topic written without transactions this
    reads exactly what ``read_uncommitted`` does."""

    def __init__(self, k: KafkaConfig, topic: str, from_beginning: bool, connect_timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.from_beginning = from_beginning
        self._tps: list[TopicPartition] = []
        self._started = False
        check_access(k, connect_timeout_s)
        try:
            with quiet_kafka():
                self._c = KafkaConsumer(enable_auto_commit=False, group_id=None, allow_auto_create_topics=False,
                                        isolation_level="read_committed", bootstrap_timeout_ms=int(connect_timeout_s * 1000), **connection_args(k))
        except KafkaError as e:
            raise _unreachable(k, connect_timeout_s, e) from e

    def refresh(self) -> int:
        """Pick up the topic's partitions (it may not exist yet, or have grown); their count.

        The first call starts where ``from_beginning`` says; a partition found later is read
        from its beginning, since everything in it arrived after we started."""
        try:
            parts = self._c.partitions_for_topic(self.topic) or set()
            new = [TopicPartition(self.topic, p) for p in sorted(parts) if TopicPartition(self.topic, p) not in self._tps]
            if new:
                first = not self._started
                self._tps = sorted(self._tps + new)
                self._c.assign(self._tps)
                (self._c.seek_to_end if first and not self.from_beginning else self._c.seek_to_beginning)(*new)
            self._started = True
        except KafkaError as e:
            raise BrokerError(f"cannot read the partitions of topic {self.topic!r}: {e}") from e
        return len(self._tps)

    def end_offsets(self) -> dict[int, int]:
        try:
            return {tp.partition: off for tp, off in self._c.end_offsets(self._tps).items()} if self._tps else {}
        except KafkaError as e:
            raise BrokerError(f"cannot read the end offsets of topic {self.topic!r}: {e}") from e

    def caught_up(self, ends: dict[int, int]) -> bool:
        """True once every partition's position has reached ``ends``."""
        try:
            return all(self._c.position(tp) >= ends.get(tp.partition, 0) for tp in self._tps)
        except KafkaError as e:
            raise BrokerError(f"cannot read positions on topic {self.topic!r}: {e}") from e

    def poll(self, timeout_s: float) -> list[Message]:
        if not self._tps:
            return []
        try:
            batch = self._c.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as e:
            raise BrokerError(f"cannot read topic {self.topic!r}: {e}") from e
        return [Message(r.partition, r.offset, r.key, r.value) for recs in batch.values() for r in recs]

    def close(self) -> None:
        with contextlib.suppress(KafkaError):
            self._c.close()
