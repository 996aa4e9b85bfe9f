"""kafka-python consumers and admin clients built from the ``[kafka]`` configuration
(producers: streamvae/kafka/produce.py).

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
import ssl
import time
from typing import Any, Iterable, Iterator

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (KafkaError, ProducerFencedError, SaslAuthenticationFailedError, TopicAlreadyExistsError,
                          UnsupportedSaslMechanismError)
from kafka.structs import OffsetAndMetadata

# The rest of streamvae names kafka-python types through this module only.
__all__ = ["KafkaError", "OffsetAndMetadata", "ProducerFencedError", "RedactSecrets", "TopicPartition",
           "check_access", "connection_args", "create_topic", "isolation", "make_consumer", "quiet_kafka",
           "recent_values"]

from streamvae.config import GroupConfig, KafkaConfig
from streamvae.errors import KafkaAccessError
from streamvae.kafka import fastrecords, rejoin, stall

log = logging.getLogger(__name__)


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
    rejoin.install()
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


def isolation(g: GroupConfig) -> str:
    """The consumers' ``isolation_level`` for ``group.delivery``."""
    return "read_committed" if g.delivery == "exactly_once" else "read_uncommitted"


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
