"""kafka-python consumers and producers built from the ``[kafka]`` configuration."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any, Iterable

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, ProducerFencedError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

# The rest of streamvae names kafka-python types through this module only.
__all__ = ["DeliveryError", "KafkaError", "OffsetAndMetadata", "Outbox", "ProducerFencedError", "TopicPartition",
           "create_topic", "isolation", "make_consumer", "make_producer", "recent_values", "transactional_id"]

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.errors import StreamvaeError

log = logging.getLogger(__name__)


class DeliveryError(StreamvaeError):
    """Some produced message was not acknowledged by the broker."""


def connection_args(k: KafkaConfig) -> dict[str, Any]:
    args: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers.split(","),
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": k.request_timeout_ms,
    }
    if k.sasl_mechanism:
        args.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username, sasl_plain_password=k.sasl_password)
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(k, key):
            args[key] = getattr(k, key)
    return args


class _Hooks(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards kafka-python's rebalance callbacks to an object with the same two methods."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.target.on_partitions_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.target.on_partitions_assigned(list(assigned))


def make_consumer(k: KafkaConfig, g: GroupConfig, topics: Iterable[str] = (), listener: Any = None,
                  instance_id: str | None = None) -> KafkaConsumer:
    """A group consumer with manual commits (offsets are committed only after delivery).

    ``listener``: any object with ``on_partitions_revoked`` / ``on_partitions_assigned``;
    they run inside ``poll``, so they must be short. ``instance_id``: a static member
    id (``group.instance.id``), None for dynamic membership. With ``group.delivery =
    "exactly_once"`` it reads committed records only (:func:`isolation`)."""
    c = KafkaConsumer(
        group_instance_id=instance_id,
        isolation_level=isolation(g),
        group_id=g.id,
        enable_auto_commit=False,
        auto_offset_reset=g.auto_offset_reset,
        max_poll_records=g.max_poll_records,
        fetch_min_bytes=g.fetch_min_bytes,
        fetch_max_wait_ms=g.fetch_max_wait_ms,
        session_timeout_ms=g.session_timeout_ms,
        heartbeat_interval_ms=max(100, g.session_timeout_ms // 3),
        max_poll_interval_ms=g.max_poll_interval_ms,
        **connection_args(k),
    )
    if topics:
        c.subscribe(list(topics), listener=_Hooks(listener) if listener is not None else None)
    return c


# Kafka's default. Longer would ride out longer broker outages inside one transaction, but
# an open transaction of a daemon that died and is not restarted holds every
# read_committed reader of its output topics back for this long.
TRANSACTION_TIMEOUT_MS = 60_000


def make_producer(k: KafkaConfig, linger_ms: int = 5, transactional_id: str | None = None) -> KafkaProducer:
    """acks=all with retries: a message counts as delivered only when all in-sync replicas have it.

    ``transactional_id``: a transactional producer (``init_transactions`` before the first
    transaction); an open transaction the broker hears nothing of for
    ``TRANSACTION_TIMEOUT_MS`` is aborted by it."""
    txn: dict[str, Any] = {}
    if transactional_id is not None:
        txn = {"transactional_id": transactional_id, "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
    return KafkaProducer(acks="all", linger_ms=linger_ms, retries=2_147_483_647, max_in_flight_requests_per_connection=1,
                         delivery_timeout_ms=max(k.request_timeout_ms + 5_000, 120_000), **txn, **connection_args(k))


def isolation(g: GroupConfig) -> str:
    """The consumers' ``isolation_level`` for ``group.delivery``."""
    return "read_committed" if g.delivery == "exactly_once" else "read_uncommitted"


def transactional_id(group_id: str, instance_id: str | None) -> str:
    """The transactional id of one daemon slot of ``group_id``.

    With a static member id it is the same across restarts of that slot, so a restart's
    ``init_transactions`` fences the producer of the process it replaces and aborts the
    transaction that process left open. With dynamic membership (``instance_id`` None)
    no id outlives its process: it is unique per process, and what fences a zombie is
    KIP-447's group metadata (its offset commit carries a generation the group has moved
    past, so the broker refuses it and its transaction aborts); a dead process's open
    transaction is aborted by the broker after ``TRANSACTION_TIMEOUT_MS``.

    >>> transactional_id("streamvae", "host-0")
    'streamvae.streamvae.host-0'
    """
    if instance_id is not None:
        return f"streamvae.{group_id}.{instance_id}"
    return f"streamvae.{group_id}.{socket.gethostname() or 'host'}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class Outbox:
    """Messages sent in one batch, and the check that every one was acknowledged."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._futures: list[tuple[str, Any]] = []
        self._refused: list[tuple[str, KafkaError]] = []  # sends the producer refused at once

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Queue one message; a send the producer refuses at once (too large, no
        metadata in time) fails :meth:`confirm` like an unacknowledged one."""
        k = key.encode("utf-8", "backslashreplace") if isinstance(key, str) else key
        try:
            self._futures.append((topic, self.producer.send(topic, key=k, value=value)))
        except KafkaError as e:
            self._refused.append((topic, e))

    def __len__(self) -> int:
        return len(self._futures)

    def confirm(self, timeout_s: float) -> int:
        """Flush and check every future; raise DeliveryError if any failed or timed out."""
        futures, self._futures = self._futures, []
        refused, self._refused = self._refused, []
        if refused:
            t, e = refused[0]
            raise DeliveryError(f"{len(refused)} messages refused by the producer (first: topic {t}: {e!r})")
        if not futures:
            return 0
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as e:
            raise DeliveryError(f"flush failed: {e!r}") from e
        failed = [(t, f) for t, f in futures if not f.is_done or f.failed()]
        if failed:
            t, f = failed[0]
            why = f.exception if f.is_done else "not acknowledged in time"
            raise DeliveryError(f"{len(failed)} of {len(futures)} messages not delivered (first: topic {t}: {why!r})")
        return len(futures)


def recent_values(k: KafkaConfig, topic: str, per_partition: int, timeout_s: float = 10.0,
                  isolation_level: str = "read_uncommitted") -> list[bytes]:
    """The last ``per_partition`` values of every partition of ``topic`` (no group).

    ``isolation_level="read_committed"``: only values of committed transactions (the
    end is then the last stable offset; transaction markers are skipped, not returned)."""
    c = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=500, isolation_level=isolation_level,
                      **connection_args(k))
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        c.assign(tps)
        ends = c.end_offsets(tps)
        begins = c.beginning_offsets(tps)
        todo = {}
        for tp in tps:
            start = max(begins[tp], ends[tp] - per_partition)
            if ends[tp] > start:
                c.seek(tp, start)
                todo[tp] = ends[tp]
            else:
                c.pause(tp)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=200).items():
                out.extend(r.value for r in recs if r.value is not None)
            for tp in [tp for tp, end in todo.items() if c.position(tp) >= end]:
                todo.pop(tp)  # (by position: a transaction's marker is the last offset, and no record)
        return out
    finally:
        c.close()


def create_topic(k: KafkaConfig, topic: str, partitions: int = 1, configs: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> bool:
    """Create ``topic`` if it does not exist (replication: the broker's default); True if
    created. A topic that exists keeps its settings. Raises KafkaError when no broker can
    be reached; a broker that refuses the creation (ACLs) is logged: the topic may still
    exist, or be auto-created by the first send."""
    adm = KafkaAdminClient(**connection_args(k))
    spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": -1}
    if configs:
        spec["configs"] = dict(configs)
    try:
        adm.create_topics({topic: spec}, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as e:
        log.warning("could not create topic %s (%r); assuming it exists or is auto-created", topic, e)
        return False
    finally:
        adm.close()
