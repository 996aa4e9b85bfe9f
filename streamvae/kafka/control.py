"""Control events on ``topics.control``: tell every daemon which model version to serve.

An event is one JSON object::

    {"type": "promote" | "rollback", "version": "<id>", "previous": "<id>" | null,
     "at": <unix seconds>, "reason": "..."}

Other types (e.g. a retrain rejected by the gate) may travel on the same topic; a daemon
acts on the two above and ignores the rest. Every daemon must see every event, so
:class:`ControlListener` assigns all partitions itself instead of joining a consumer
group (a group would hand each event to one member only), and it starts at the END of
the topic: a daemon that starts up serves the registry's CURRENT anyway, and replaying
old promotions would only make it swap back and forth.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamvae.config import KafkaConfig
from streamvae.errors import StreamvaeError
from streamvae.kafka.clients import connection_args, create_topic

log = logging.getLogger(__name__)

ACTIONS = ("promote", "rollback")


class ControlError(StreamvaeError):
    """A control event could not be published, or the control topic cannot be read."""


def control_event(kind: str, version: str, previous: str | None = None, reason: str = "",
                  at: float | None = None) -> dict[str, Any]:
    """The event body; ``kind`` is one of :data:`ACTIONS`.

    >>> e = control_event("promote", "v2", "v1", "manual", at=1.0)
    >>> e["type"], e["version"], e["previous"], e["at"]
    ('promote', 'v2', 'v1', 1.0)
    """
    if kind not in ACTIONS:
        raise ControlError(f"control event type must be one of {', '.join(ACTIONS)}; got {kind!r}")
    if not isinstance(version, str) or not version:
        raise ControlError(f"control event needs a version id; got {version!r}")
    return {"type": kind, "version": version, "previous": previous, "at": time.time() if at is None else at,
            "reason": reason}


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
    if event.get("type") in ACTIONS and not (isinstance(event.get("version"), str) and event["version"]):
        raise ControlError(f"a {event['type']} event needs a version id; got {event.get('version')!r}")
    ensure_topic(k, topic)
    try:
        producer = KafkaProducer(acks="all", retries=5, max_block_ms=int(timeout_s * 1000), **connection_args(k))
    except KafkaError as e:
        raise ControlError(f"cannot reach a Kafka broker at {k.bootstrap_servers} to publish on {topic!r}: {e!r}") from e
    try:
        meta = producer.send(topic, key=b"control", value=orjson.dumps(dict(event))).get(timeout=timeout_s)
        log.info("published %s %s on %s (partition %d offset %d)", event.get("type"), event.get("version"), topic,
                 meta.partition, meta.offset)
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

    def poll(self) -> list[dict[str, Any]]:
        """Events received since the last call, oldest first; never blocks."""
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
                except (ValueError, TypeError) as e:
                    log.warning("control topic %s offset %d: not a control event (%s); skipped", self.topic, r.offset, e)
                    continue
                out.append(ev)
        return out

    def close(self) -> None:
        try:
            self._c.close()
        except KafkaError as e:
            log.debug("closing control listener: %r", e)
