"""kafka-python producers built from the ``[kafka]`` configuration, and how a batch's
messages are confirmed (:class:`Outbox`) and a producer closed.

Connection settings and the access check come from streamvae/kafka/clients.py, as for
every client.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from streamvae.config import KafkaConfig
from streamvae.errors import StreamvaeError
from streamvae.kafka.clients import KafkaError, check_access, connection_args

__all__ = ["DeliveryError", "Outbox", "TRANSACTION_TIMEOUT_MS", "close_producer", "delivery_timeout_ms",
           "make_producer", "transactional_id"]

log = logging.getLogger(__name__)


class DeliveryError(StreamvaeError):
    """Some produced message was not acknowledged by the broker."""


# Kafka's default. Longer would ride out longer broker outages inside one transaction, but
# an open transaction of a daemon that died and is not restarted holds every
# read_committed reader of its output topics back for this long.
TRANSACTION_TIMEOUT_MS = 60_000


def delivery_timeout_ms(k: KafkaConfig) -> int:
    """How long a producer of :func:`make_producer` retries a message before it fails it."""
    return max(k.request_timeout_ms + 5_000, 120_000)


def make_producer(k: KafkaConfig, linger_ms: int = 5, transactional_id: str | None = None) -> KafkaProducer:
    """acks=all with retries: a message counts as delivered only when all in-sync replicas have it.

    ``transactional_id``: a transactional producer (``init_transactions`` before the first
    transaction); an open transaction the broker hears nothing of for
    ``TRANSACTION_TIMEOUT_MS`` is aborted by it."""
    txn: dict[str, Any] = {}
    if transactional_id is not None:
        txn = {"transactional_id": transactional_id, "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
    check_access(k)
    return KafkaProducer(acks="all", linger_ms=linger_ms, retries=2_147_483_647, max_in_flight_requests_per_connection=1,
                         delivery_timeout_ms=delivery_timeout_ms(k),
                         metrics_enabled=False,  # kafka-python's own sensors: nothing reads the producer's
                         **txn,
                         **connection_args(k))


def close_producer(producer: KafkaProducer, timeout_s: float) -> bool:
    """Close ``producer`` after at most ``timeout_s`` spent on the messages it still holds;
    False if some were still unanswered then (dropped: their batch was not committed).

    kafka-python's own ``close`` raises when its flush times out (the broker is away) and
    leaves the producer open, whose exit hook then raises again as the process ends. So
    what is still unanswered is failed first, by the sender's force close (kafka-python
    3.0.x, as pinned), and the producer then closes at once."""
    try:
        producer.flush(timeout=timeout_s)
        answered = True
    except KafkaError:
        answered = False
        sender = producer._sender
        sender.force_close()  # fails every batch still in the accumulator
        sender.join(timeout_s)
    producer.close(timeout=timeout_s)
    return answered


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


VERDICT_STEP_S = 5.0  # Outbox.confirm: how often a wait for the producer's verdict looks at its stop event


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

    def confirm(self, timeout_s: float, verdict_s: float = 0.0, stop: threading.Event | None = None) -> int:
        """Flush and check every future; raise DeliveryError if any failed or timed out.

        ``verdict_s``: when the flush times out with messages still pending (the broker is
        away), keep waiting up to this long in all for the producer's verdict on each, in
        steps of ``VERDICT_STEP_S``, unless ``stop`` is set. Pass the producer's
        ``delivery_timeout_ms`` (and a little): the producer keeps retrying a pending
        message until then, so a DeliveryError raised sooner would send the batch again
        while its first copy may still land (at least once: a repeat, scored again)."""
        futures, self._futures = self._futures, []
        refused, self._refused = self._refused, []
        if refused:
            t, e = refused[0]
            raise DeliveryError(f"{len(refused)} messages refused by the producer (first: topic {t}: {e!r})")
        if not futures:
            return 0
        began = time.monotonic()
        step, said = timeout_s, False
        while True:
            try:
                self.producer.flush(timeout=step)
                break
            except KafkaError as e:
                waited = time.monotonic() - began
                if waited >= verdict_s or (stop is not None and stop.is_set()):
                    raise DeliveryError(f"flush failed: {e!r}") from e
                pending = sum(not f.is_done for _, f in futures)
                if not pending:  # what still waits is not this batch's: its futures say how it went
                    break
                if not said:
                    said = True
                    log.warning("%d of %d messages not acknowledged after %.0fs (%r); waiting for the producer's "
                                "verdict, up to %.0fs in all", pending, len(futures), waited, e, verdict_s)
                step = max(0.1, min(VERDICT_STEP_S, verdict_s - waited))
        failed = [(t, f) for t, f in futures if not f.is_done or f.failed()]
        if failed:
            t, f = failed[0]
            why = f.exception if f.is_done else "not acknowledged in time"
            raise DeliveryError(f"{len(failed)} of {len(futures)} messages not delivered (first: topic {t}: {why!r})")
        return len(futures)
