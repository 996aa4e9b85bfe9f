"""Reading one topic between two times, without a group: what ``streamvae report`` shows.

The first offset of each partition comes from the broker's time index
(``offsets_for_times``), so a report of the last hour of a long topic reads an hour, not
the topic. Times are the records' Kafka timestamps (when they were produced, unless the
producer set them), in epoch seconds.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from streamvae.config import KafkaConfig
from streamvae.kafka.clients import check_access, connection_args, quiet_kafka
from streamvae.kafka.tools import BrokerError, _unreachable

log = logging.getLogger(__name__)


class Stamped(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


def read_between(k: KafkaConfig, topic: str, since: float | None, until: float | None, connect_timeout_s: float = 10.0,
                 timeout_s: float = 120.0) -> list[Stamped]:
    """Every record of ``topic`` with a timestamp in ``[since, until]`` (None: open), as it
    stands now (records that arrive while reading are left out). BrokerError when the
    broker cannot be reached, the topic does not exist, or the read does not finish in
    ``timeout_s``."""
    check_access(k, connect_timeout_s)
    try:
        with quiet_kafka():
            c = KafkaConsumer(enable_auto_commit=False, group_id=None, allow_auto_create_topics=False,
                              bootstrap_timeout_ms=int(connect_timeout_s * 1000), **connection_args(k))
    except KafkaError as e:
        raise _unreachable(k, connect_timeout_s, e) from e
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(f"topic {topic!r} does not exist at {k.bootstrap_servers}; check the topic name")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        ends = c.end_offsets(tps)
        starts = c.beginning_offsets(tps) if since is None else _offsets_at(c, tps, since, ends)
        if until is not None:  # the first record after ``until`` ends the partition's range
            ends = {tp: min(ends[tp], off) for tp, off in _offsets_at(c, tps, until + 0.001, ends).items()}
        todo = {tp: ends[tp] for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            if tp in todo:
                c.seek(tp, starts[tp])
            else:
                c.pause(tp)
        lo, hi = (-1 if since is None else int(since * 1000)), (2**63 if until is None else int(until * 1000))
        out: list[Stamped] = []
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading topic {topic!r} took over {timeout_s:g} s ({len(out)} records read); "
                                  "narrow --since/--until")
            for tp, recs in c.poll(timeout_ms=500).items():
                end = ends[tp]
                out += [Stamped(r.partition, r.offset, r.timestamp, r.value) for r in recs
                        if r.offset < end and r.value is not None and lo <= r.timestamp <= hi]
            for tp in [tp for tp, end in todo.items() if c.position(tp) >= end]:
                todo.pop(tp)
                c.pause(tp)
        log.info("read %d records of %s", len(out), topic)
        return out
    except KafkaError as e:
        raise BrokerError(f"cannot read topic {topic!r} at {k.bootstrap_servers}: {e}") from e
    finally:
        c.close()


def _offsets_at(c: KafkaConsumer, tps: list[TopicPartition], t: float, ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """The first offset at or after time ``t`` per partition (the end where none is)."""
    found = c.offsets_for_times({tp: int(t * 1000) for tp in tps})
    return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
