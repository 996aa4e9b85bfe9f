"""Topics, end offsets and a group's committed ``scored_to`` on a test broker (kafka-python).

``Cluster`` holds one admin client and one group-less consumer for repeated questions;
``Topics`` names a run's input / alerts / dead-letter / control topics with a uuid (so runs
on one broker never mix) and answers "has the daemon scored everything yet?".
"""

from __future__ import annotations

import json
import time
import uuid
from types import TracebackType
from typing import Any, Mapping

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from streamvae.kafka.offsets import decode_metadata
from streamvae.testing.procs import DaemonProc, DaemonError


class Cluster:
    """One admin client and one consumer (no group, no commits) on ``bootstrap``."""

    def __init__(self, bootstrap: str, client_id: str = "streamvae-testing") -> None:
        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
        try:
            self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                          client_id=client_id)
        except BaseException:
            self.admin.close()
            raise

    def create(self, topics: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None,
               timeout: float = 30.0) -> None:
        """Create each topic with its partition count (and ``configs[name]``), then wait until
        this consumer sees them all. ``TopicAlreadyExistsError`` if one exists."""
        spec: dict[str, dict[str, Any]] = {name: {"num_partitions": n, "replication_factor": 1} for name, n in topics.items()}
        for name, conf in (configs or {}).items():
            if conf:
                spec[name]["configs"] = dict(conf)
        self.admin.create_topics(spec, timeout_ms=int(timeout * 1000))
        deadline = time.monotonic() + timeout
        while not all(len(self.consumer.partitions_for_topic(t) or ()) == n for t, n in topics.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(topics)} did not appear on {self.bootstrap} within {timeout:g} s")
            time.sleep(0.1)
            self.consumer.topics()  # refreshes the metadata

    def end_offsets(self, topic: str) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in self.consumer.end_offsets(tps).items()}

    def committed(self, group: str, topic: str) -> dict[int, tuple[int, dict[str, Any]]]:
        """The group's committed offset and decoded metadata, per partition of ``topic``."""
        got = self.admin.list_group_offsets(group).get(group, {})
        return {tp.partition: (om.offset, decode_metadata(om.metadata)) for tp, om in got.items() if tp.topic == topic}

    def scored_to(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the offset up to which the daemon has scored (its commit metadata)."""
        return {p: int(meta.get("scored_to", 0)) for p, (_, meta) in self.committed(group, topic).items()}

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.admin.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Topics:
    """uuid-named topics ``<prefix>sensors-<uuid>`` (input, ``partitions`` partitions, with
    ``input_configs``), ``...alerts-...`` (with ``alerts_configs``) and ``...dlq-...`` created on ``bootstrap``; the
    control topic is only named (the daemon creates it). ``group``: a uuid-named group id."""

    def __init__(self, bootstrap: str, partitions: int = 3, prefix: str = "",
                 input_configs: Mapping[str, str] | None = None, alerts_configs: Mapping[str, str] | None = None) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.input, self.alerts, self.dlq, self.control = (f"{prefix}{n}-{tag}" for n in ("sensors", "alerts", "dlq", "control"))
        self.group = f"streamvae-{prefix}{tag}"
        with Cluster(bootstrap) as k:
            k.create({self.input: partitions, self.alerts: 1, self.dlq: 1},
                     {self.input: input_configs or {}, self.alerts: alerts_configs or {}})

    def config_sections(self, group: str | None = None) -> dict[str, dict[str, Any]]:
        """The daemon config's ``kafka``, ``topics`` and ``group`` sections for these topics."""
        return {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "topics": {"input": self.input, "alerts": self.alerts, "dead_letter": self.dlq, "control": self.control},
            "group": {"id": group or self.group},
        }

    def end_offsets(self) -> dict[int, int]:
        with Cluster(self.bootstrap) as k:
            return k.end_offsets(self.input)

    def committed(self, group: str | None = None) -> dict[int, tuple[int, dict[str, Any]]]:
        with Cluster(self.bootstrap) as k:
            return k.committed(group or self.group, self.input)

    def scored_fraction(self, group: str | None = None, cluster: Cluster | None = None) -> float:
        """Share of the input's records the group's committed ``scored_to`` covers."""
        if cluster is None:
            with Cluster(self.bootstrap) as k:
                return self.scored_fraction(group, k)
        ends = cluster.end_offsets(self.input)
        done = cluster.scored_to(group or self.group, self.input)
        return sum(min(done.get(p, 0), e) for p, e in ends.items()) / max(sum(ends.values()), 1)

    def wait_caught_up(self, timeout: float = 120.0, daemon: DaemonProc | None = None, group: str | None = None,
                       poll: float = 0.5) -> None:
        """Until the group has scored every record in the input (``daemon`` checked alive
        meanwhile); ``DaemonError`` after ``timeout`` seconds. A broker that does not answer
        for a while (restarting) is waited for, with new clients."""
        deadline = time.monotonic() + timeout
        k: Cluster | None = None
        try:
            while time.monotonic() < deadline:
                if daemon is not None:
                    daemon.check_alive()
                try:
                    k = k or Cluster(self.bootstrap)
                    if self.scored_fraction(group, k) >= 1.0:
                        return
                except (KafkaError, OSError):
                    if k is not None:
                        k.close()
                    k = None
                time.sleep(poll)
        finally:
            if k is not None:
                k.close()
        raise DaemonError(f"daemon did not catch up in {timeout:g}s: committed {self.committed(group)} vs end "
                          f"{self.end_offsets()}" + (f"\n{daemon.log_tail()}" if daemon else ""))

    def read(self, topic: str, idle_ms: int = 3000) -> list[dict[str, Any]]:
        """Every JSON record of ``topic`` from the beginning, until ``idle_ms`` pass without one."""
        c = KafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                          consumer_timeout_ms=idle_ms, enable_auto_commit=False)
        try:
            return [json.loads(m.value) for m in c]
        finally:
            c.close()

