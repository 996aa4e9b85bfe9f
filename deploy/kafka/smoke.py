#!/usr/bin/env python3
"""Round trip through a running broker: the checks that deploy/kafka/README.md reports.

Creates a uuid-named topic with 3 partitions, produces N messages with acks='all', reads
them back in a consumer group with manual commits, commits, and checks that the committed
offsets equal each partition's end offset. Prints one JSON line; exit 0 only if all holds.

    bootstrap=$(scripts/kafka start | tail -1)
    .venv/bin/python deploy/kafka/smoke.py "$bootstrap" [--messages 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args(argv)
    topic, group = f"smoke-{uuid.uuid4().hex[:12]}", f"smoke-group-{uuid.uuid4().hex[:8]}"
    result: dict[str, object] = {"topic": topic, "group": group}

    t0 = time.monotonic()
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
    result["create_topic_s"] = round(time.monotonic() - t0, 3)

    # 1. produce with acks='all' and check every future
    t0 = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    futures = [
        producer.send(topic, key=f"k{i % 17}".encode(), value=json.dumps({"i": i}).encode())
        for i in range(args.messages)
    ]
    producer.flush()
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    produced: dict[int, int] = {}
    for m in metas:
        produced[m.partition] = produced.get(m.partition, 0) + 1
    result["produce_s"] = round(time.monotonic() - t0, 3)
    result["produced_per_partition"] = dict(sorted(produced.items()))

    # 2. consume in a group with manual commits
    t0 = time.monotonic()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=args.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < args.messages and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            seen.update(json.loads(r.value)["i"] for r in records)
    consumer.commit()
    result["consume_s"] = round(time.monotonic() - t0, 3)
    result["consumed_unique"] = len(seen)

    # 3. committed offsets == end offsets, per partition
    parts = [TopicPartition(topic, p) for p in range(args.partitions)]
    end = consumer.end_offsets(parts)
    committed = {tp.partition: consumer.committed(tp) for tp in parts}
    consumer.close()
    listed = admin.list_group_offsets(group)[group]
    admin.close()
    result["end_offsets"] = {tp.partition: end[tp] for tp in parts}
    result["committed"] = committed
    result["admin_committed"] = {tp.partition: om.offset for tp, om in sorted(listed.items())}
    ok = (
        len(seen) == args.messages
        and sum(produced.values()) == args.messages
        and all(committed[tp.partition] == end[tp] for tp in parts)
        and sum(end.values()) == args.messages
        and result["admin_committed"] == result["end_offsets"]
    )
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
