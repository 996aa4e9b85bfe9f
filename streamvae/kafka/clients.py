"""kafka-python consumers and producers built from the ``[kafka]`` configuration.

Every client streamvae creates gets its connection settings from :func:`connection_args`
(bootstrap servers, client id, TLS and SASL) and, before it is built, passes
:func:`check_access`: with TLS or SASL configured, one connection the way every client
will make it, so that a refused password or an untrusted certificate is one
:class:`~streamvae.errors.KafkaAccessError` line at start instead of kafka-python's
bootstrap retrying until its timeout and saying only that it could not bootstrap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from typing import Any, Iterable, Iterator

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (KafkaError, ProducerFencedError, SaslAuthenticationFailedError, TopicAlreadyExistsError,
                          UnsupportedSaslMechanismError)
from kafka.structs import OffsetAndMetadata

# The rest of streamvae names kafka-python types through this module only.
__all__ = ["DeliveryError", "KafkaError", "OffsetAndMetadata", "Outbox", "ProducerFencedError", "RedactSecrets",
           "TopicPartition", "check_access", "close_producer", "connection_args", "create_topic",
           "delivery_timeout_ms", "isolation", "make_consumer", "make_producer", "quiet_kafka", "recent_values",
           "transactional_id"]

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.errors import KafkaAccessError, StreamvaeError
from streamvae.kafka import fastrecords, stall

log = logging.getLogger(__name__)


class DeliveryError(StreamvaeError):
    """Some produced message was not acknowledged by the broker."""


# kafka-python's names of the settings that hold secrets
SECRET_ARGS = ("sasl_plain_password", "ssl_password")


class ConnectionArgs(dict[str, Any]):
    """kafka-python keyword arguments whose ``repr`` shows ``'***'`` for the secrets."""

    def __repr__(self) -> str:
        return repr({k: ("***" if k in SECRET_ARGS and v else v) for k, v in self.items()})

    __str__ = __repr__


def connection_args(k: KafkaConfig) -> ConnectionArgs:
    """The kafka-python keyword arguments of every client built from ``k``: bootstrap
    servers, client id, request timeout, and the TLS / SASL settings that are set.

    Its secrets are registered with :class:`RedactSecrets`, which keeps them out of
    kafka-python's own log lines (at DEBUG it logs an admin client's whole configuration
    and the bytes of every request, SASL PLAIN's password among them).

    >>> a = connection_args(KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
    ...                                 sasl_username="u", sasl_password="pw"))
    >>> a["sasl_plain_password"], "pw" in repr(a)
    ('pw', False)
    """
    args = ConnectionArgs(bootstrap_servers=k.bootstrap_servers.split(","), client_id=k.client_id,
                          security_protocol=k.security_protocol, request_timeout_ms=k.request_timeout_ms)
    if k.sasl_mechanism:
        args.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username, sasl_plain_password=k.sasl_password)
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
        if getattr(k, key):
            args[key] = getattr(k, key)
    if k.security_protocol in ("SSL", "SASL_SSL"):
        args["ssl_check_hostname"] = k.ssl_check_hostname
    RedactSecrets.add(k.sasl_password, k.ssl_password)
    return args


class RedactSecrets(logging.Filter):
    """Replaces every registered secret in a log record's message with ``***``.

    :func:`connection_args` registers the secrets of each configuration, and this
    module puts one instance on every ``kafka.*`` logger of kafka-python (a filter on a
    logger sees only that logger's records). A handler that should redact the records
    of any logger gets its own: ``handler.addFilter(RedactSecrets())``.
    """

    _secrets: set[str] = set()

    @classmethod
    def add(cls, *secrets: str | None) -> None:
        for s in secrets:
            if s:
                cls._secrets.add(s)
                cls._secrets.add(repr(s.encode())[2:-1])  # as it shows inside a bytes repr

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        msg = record.getMessage()
        hits = [s for s in self._secrets if s in msg]
        if hits:
            for s in sorted(hits, key=len, reverse=True):
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


def _redact_kafka_loggers() -> None:
    redact = RedactSecrets()
    for name in sorted(logging.root.manager.loggerDict):
        if name == "kafka" or name.startswith("kafka."):
            logging.getLogger(name).addFilter(redact)


_redact_kafka_loggers()


@contextlib.contextmanager
def quiet_kafka() -> Iterator[None]:
    """kafka-python's own log lines off (CRITICAL only) for the duration.

    It logs every failed bootstrap attempt at WARNING/ERROR (about 5 lines a second);
    the one line the user needs is the error streamvae raises after the timeout."""
    lg = logging.getLogger("kafka")
    level = lg.level
    lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        lg.setLevel(level)


_ACCESS_OK: set[KafkaConfig] = set()  # configurations check_access has let through


def check_access(k: KafkaConfig, timeout_s: float = 10.0) -> None:
    """With TLS or SASL configured, connect once to a bootstrap server as every client
    will (TLS handshake, ApiVersions, SASL) and raise :class:`KafkaAccessError`, one line
    naming the cause, when the broker refuses the credentials or its certificate is not
    trusted. PLAINTEXT costs nothing; a configuration that passed is not checked again.

    A broker that cannot be reached, or does not answer in ``timeout_s``, passes: the
    client built next reports that in its own way (or waits for the broker). Measured
    on the local broker (scripts/kafka start --secure): about 0.02 s when the login
    works, 0.3 s for a refused password (the broker delays its answer 100 ms)."""
    if k.security_protocol == "PLAINTEXT" or k in _ACCESS_OK:
        return
    from kafka.net.compat import KafkaNetClient  # kafka-python 3.0's KafkaClient

    args = connection_args(k)
    deadline = time.monotonic() + timeout_s
    with quiet_kafka():
        client = KafkaNetClient(**args)
        try:
            for node in client.cluster.bootstrap_brokers():
                if time.monotonic() >= deadline:
                    break
                error, after_versions = _connect_once(client, node.node_id, deadline)
                if error is None:
                    _ACCESS_OK.add(k)
                    return
                refusal = _refusal(k, f"{node.host}:{node.port}", error, after_versions)
                if refusal is not None:
                    raise refusal
        finally:
            client.close()


def _connect_once(client: Any, node_id: Any, deadline: float) -> tuple[BaseException | None, bool]:
    """One connection to ``node_id``: (its error or None, whether ApiVersions was answered).

    kafka-python keeps the cause of a failed connection on the connection's init future,
    which its bootstrap loop only logs before retrying; that is why this goes one level
    down (``KafkaNetClient``'s connection manager)."""
    client.maybe_connect(node_id)
    conn = client._manager._conns.get(node_id)
    if conn is None:
        return KafkaError("no connection"), False
    client._net.poll(timeout_ms=max(1.0, (deadline - time.monotonic()) * 1000), future=conn.init_future)
    f = conn.init_future
    if not f.is_done:
        return KafkaError("no answer in time"), False
    return (None if f.succeeded() else f.exception), conn.broker_version_data is not None


def _refusal(k: KafkaConfig, addr: str, e: BaseException, after_versions: bool) -> KafkaAccessError | None:
    """The one line for a connection the broker refused; None when it is not a refusal."""
    cause = e.__context__ or e.__cause__  # kafka-python raises its error inside the ssl module's except
    if isinstance(cause, ssl.SSLCertVerificationError):
        return KafkaAccessError(f"kafka: the broker's certificate at {addr} is not trusted (ssl_cafile "
                                f"{k.ssl_cafile or 'unset: the system CAs'}): {cause.verify_message}")
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return KafkaAccessError(f"kafka: TLS handshake with {addr} failed ({cause.reason or cause}); is it a "
                                f"{k.security_protocol} listener? (kafka.security_protocol)")
    if isinstance(e, UnsupportedSaslMechanismError):
        return KafkaAccessError(f"kafka: the broker at {addr} does not offer SASL {k.sasl_mechanism}: {e}")
    # kafka-python often reads the broker's closing of the connection before the refusal it
    # sent just ahead of it (both arrive at once), so a connection lost after ApiVersions,
    # in SASL, is a refusal too.
    if k.sasl_mechanism and (isinstance(e, SaslAuthenticationFailedError) or (after_versions and isinstance(e, KafkaError))):
        return KafkaAccessError(f"kafka: authentication failed for user {k.sasl_username!r} (SASL {k.sasl_mechanism}) "
                                f"at {addr}; check kafka.sasl_username and kafka.sasl_password")
    return None


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
    check_access(k)
    fastrecords.install()  # records read in C where the extension was built
    stall.install()
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
        metrics_enabled=False,  # kafka-python's own sensors, per fetch and partition: nothing reads them
        **connection_args(k),
    )
    if topics:
        c.subscribe(list(topics), listener=_Hooks(listener) if listener is not None else None)
    return c


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
        while True:
            try:
                self.producer.flush(timeout=timeout_s)
                break
            except KafkaError as e:
                waited = time.monotonic() - began
                pending = sum(not f.is_done for _, f in futures)
                if waited >= verdict_s or (stop is not None and stop.is_set()):
                    raise DeliveryError(f"flush failed: {e!r}") from e
                if not pending:  # what still waits is not this batch's: its futures say how it went
                    break
                if timeout_s > VERDICT_STEP_S:  # the first wait: say it once
                    log.warning("%d of %d messages not acknowledged after %.0fs (%r); waiting for the producer's "
                                "verdict, up to %.0fs in all", pending, len(futures), waited, e, verdict_s)
                timeout_s = max(0.1, min(VERDICT_STEP_S, verdict_s - waited))
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
    check_access(k)
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
    check_access(k)
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
