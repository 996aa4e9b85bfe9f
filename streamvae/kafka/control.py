"""Control events on ``topics.control``: tell every daemon which model version to serve.

The one definition of the schema (:class:`ControlEvent`); an event is one JSON object::

    {"type": "promote" | "rollback" | "rejected", "version": "<id>", "previous": "<id>" | null,
     "at": <unix seconds>, "reason": "...", "reasons": ["...", ...]}

``promote`` and ``rollback`` (:data:`ACTIONS`) move the daemons to ``version``;
``rejected`` says a retrain's candidate ``version`` was kept out by the gate, with the
gate's ``reasons`` (daemons ignore it; operators and dashboards read it). Other types may
travel on the same topic and are ignored. Every daemon must see every event, so
:class:`ControlListener` assigns all partitions itself instead of joining a consumer
group (a group would hand each event to one member only), and it starts at the END of
the topic: a daemon that starts up serves the registry's CURRENT anyway, and replaying
old promotions would only make it swap back and forth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamvae.config import KafkaConfig
from streamvae.errors import StreamvaeError
from streamvae.kafka.clients import check_access, connection_args, create_topic

log = logging.getLogger(__name__)

TYPES = ("promote", "rollback", "rejected")
ACTIONS = ("promote", "rollback")  # the types a daemon acts on


class ControlError(StreamvaeError):
    """A control event could not be published, or the control topic cannot be read."""


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """One control event (see the module doc); ``reasons``: a rejection's, one per failed check."""

    type: str
    version: str
    previous: str | None = None
    at: float = 0.0
    reason: str = ""
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "version": self.version, "previous": self.previous, "at": self.at,
                             "reason": self.reason}
        if self.reasons:
            d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ControlEvent":
        """Check and read one event; ControlError (naming what is wrong) if it is not one.

        >>> ControlEvent.from_dict({"type": "promote", "version": "v2", "at": 5}).at
        5.0
        """
        kind, version, previous = d.get("type"), d.get("version"), d.get("previous")
        if kind not in TYPES:
            raise ControlError(f"control event type must be one of {', '.join(TYPES)}; got {kind!r}")
        if not isinstance(version, str) or not version:
            raise ControlError(f"a {kind} event needs a version id; got {version!r}")
        if previous is not None and not isinstance(previous, str):
            raise ControlError(f"control event previous must be a version id or null; got {previous!r}")
        at, reasons = d.get("at", 0.0), d.get("reasons", [])
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ControlError(f"control event at must be unix seconds; got {at!r}")
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ControlError(f"control event reasons must be a list of strings; got {reasons!r}")
        return cls(kind, version, previous, float(at), str(d.get("reason", "")), tuple(reasons))


def control_event(kind: str, version: str, previous: str | None = None, reason: str = "",
                  at: float | None = None, reasons: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The body of one event (``at``: now by default), checked as a reader checks it.

    >>> e = control_event("promote", "v2", "v1", "manual", at=1.0)
    >>> e["type"], e["version"], e["previous"], e["at"]
    ('promote', 'v2', 'v1', 1.0)
    """
    d = ControlEvent(kind, version, previous, time.time() if at is None else at, reason, tuple(reasons)).to_dict()
    ControlEvent.from_dict(d)
    return d


def ensure_topic(k: KafkaConfig, topic: str, timeout_s: float = 10.0) -> None:
    """Create ``topic`` with one partition if it does not exist (replication: broker default).

    One partition keeps every event in one order, so the last event read is the last
    one published. A broker that refuses the creation (ACLs) is logged: the topic may
    still exist, or be auto-created by the first send."""
    try:
        if create_topic(k, topic, 1, timeout_s=timeout_s):
            log.info("created control topic %s", topic)
    except KafkaError as e:
        raise ControlError(f"cannot reach a Kafka broker at {k.bootstrap_servers} to create topic {topic!r}: {e!r}") from e


def publish_control(k: KafkaConfig, topic: str, event: Mapping[str, Any], timeout_s: float = 30.0) -> None:
    """Send one event with acks=all and wait for the broker's acknowledgement.

    Raises ControlError (one line) when it is not acknowledged within ``timeout_s``: the
    caller must then say that the daemons did not hear about the change."""
    ControlEvent.from_dict(event)
    ensure_topic(k, topic)
    check_access(k)
    try:
        producer = KafkaProducer(acks="all", retries=5, max_block_ms=int(timeout_s * 1000), **connection_args(k))
    except KafkaError as e:
        raise ControlError(f"cannot reach a Kafka broker at {k.bootstrap_servers} to publish on {topic!r}: {e!r}") from e
    try:
        meta = producer.send(topic, key=b"control", value=orjson.dumps(dict(event))).get(timeout=timeout_s)
        log.info("published %s %s on %s (partition %d offset %d)", event.get("type"), event.get("version"), topic,
                 meta.partition, meta.offset,
                 extra={"topic": topic, "partition": meta.partition, "offset": meta.offset})
    except KafkaError as e:
        raise ControlError(f"control event {event.get('type')} {event.get('version')} was not acknowledged by "
                           f"{k.bootstrap_servers} on topic {topic!r}: {e!r}") from e
    finally:
        producer.close(timeout=5)


class ControlListener:
    """Every partition of the control topic from its current end; no group, no commits.

    ``poll()`` never blocks: the daemon calls it between two batches, and it returns the
    events that arrived since (usually none). Malformed messages are logged and skipped.
    """

    def __init__(self, k: KafkaConfig, topic: str, create: bool = True, timeout_s: float = 10.0) -> None:
        self.topic = topic
        if create:
            ensure_topic(k, topic, timeout_s)
        check_access(k)
        try:
            self._c = KafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=200,
                                    **connection_args(k))
        except KafkaError as e:
            raise ControlError(f"cannot reach a Kafka broker at {k.bootstrap_servers} for topic {topic!r}: {e!r}") from e
        try:
            deadline = time.monotonic() + timeout_s
            parts = self._c.partitions_for_topic(topic)
            while not parts and time.monotonic() < deadline:  # metadata of a topic just created
                time.sleep(0.2)
                parts = self._c.partitions_for_topic(topic)
            if not parts:
                raise ControlError(f"control topic {topic!r} does not exist at {k.bootstrap_servers}; create it")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            self._c.assign(tps)
            # Explicit end offsets, not seek_to_end(): that resolves lazily at a later
            # poll, and an event published in between would be skipped.
            for tp, end in self._c.end_offsets(tps).items():
                self._c.seek(tp, end)
        except KafkaError as e:
            self._c.close()
            raise ControlError(f"cannot read control topic {topic!r} at {k.bootstrap_servers}: {e!r}") from e
        except BaseException:
            self._c.close()
            raise
        log.info("listening for control events on %s (%d partition(s))", topic, len(tps))

    def poll(self) -> list[ControlEvent]:
        """Events received since the last call, oldest first; never blocks. Messages that
        are not control events are logged and skipped; other types are skipped."""
        try:
            batch = self._c.poll(timeout_ms=0)
        except KafkaError as e:
            log.warning("control topic %s: poll failed (%r); will retry", self.topic, e)
            return []
        out = []
        for recs in batch.values():
            for r in recs:
                try:
                    ev = orjson.loads(r.value)
                    if not isinstance(ev, dict):
                        raise ValueError("not a JSON object")
                    if ev.get("type") not in TYPES:
                        log.debug("control topic %s offset %d: event type %r ignored", self.topic, r.offset, ev.get("type"),
                                  extra={"topic": self.topic, "partition": r.partition, "offset": r.offset})
                        continue
                    out.append(ControlEvent.from_dict(ev))
                except (ValueError, TypeError, ControlError) as e:
                    log.warning("control topic %s offset %d: not a control event (%s); skipped", self.topic, r.offset, e,
                                extra={"topic": self.topic, "partition": r.partition, "offset": r.offset})
        return out

    def close(self) -> None:
        try:
            self._c.close()
        except KafkaError as e:
            log.debug("closing control listener: %r", e)
