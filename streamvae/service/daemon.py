"""``streamvae run``: poll -> decode -> pipeline -> produce -> await acks -> commit.

One loop iteration handles one poll:

1. decode every record; a bad one becomes a dead letter with its reason;
2. records before the partition's ``scored_to`` (already scored before a restart) only
   rebuild windows; the rest go through ``StreamPipeline.process`` (one model call);
3. produce alerts and dead letters, flush, check every future (acks=all);
4. commit, per partition, the oldest offset still inside an open window, with
   ``scored_to`` in the commit metadata.

If step 3 fails, step 4 does not run: the partitions are rewound to their last commit
and their windows rebuilt, so the batch is read again and nothing is lost. Alert ids
are deterministic and the ids already acknowledged are remembered (and, at start, read
back from the tail of the alerts topic), so a re-read does not publish an alert twice.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from typing import Any

from streamvae.config import Config
from streamvae.core.episodes import EpisodeTracker
from streamvae.core.pipeline import Reading, SensorRules, StreamPipeline
from streamvae.core.records import RecordDecoder
from streamvae.core.thresholds import ThresholdBank
from streamvae.core.windows import WindowAssembler
from streamvae.errors import RecordError
from streamvae.kafka import codec
from streamvae.kafka.clients import (
    DeliveryError,
    KafkaError,
    OffsetAndMetadata,
    Outbox,
    TopicPartition,
    make_consumer,
    make_producer,
    recent_values,
)
from streamvae.kafka.offsets import PartitionOffsets, decode_metadata, encode_metadata
from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_MS = 10_000
RECENT_ALERTS_PER_PARTITION = 5_000


class _BoundedSet:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[str, None] = OrderedDict()

    def add(self, k: str) -> None:
        self._d[k] = None
        if len(self._d) > self.size:
            self._d.popitem(last=False)

    def __contains__(self, k: object) -> bool:
        return k in self._d

    def __len__(self) -> int:
        return len(self._d)


def build_pipeline(cfg: Config, det: Any) -> StreamPipeline:
    """The streaming pipeline for one model, thresholds warm-started from its held-out scores."""
    t = cfg.threshold
    bank = ThresholdBank(t.kind, t.tracker_params(), min_history=t.min_history, max_entities=t.max_entities,
                         per_entity=t.per_entity).warm_start(det.heldout_scores_)
    e = cfg.episodes
    episodes = EpisodeTracker(e.open_after, e.close_after, e.update_every, max_entities=t.max_entities)
    mc = det.config
    asm = WindowAssembler(mc.window, mc.stride, mc.n_features, max_gap=cfg.records.max_gap or mc.max_gap,
                          max_lateness=cfg.records.max_lateness, max_entities=t.max_entities)
    rules = None
    if cfg.rules.dead_sensor or cfg.rules.stuck_sensor:
        rules = SensorRules(cfg.rules.dead_sensor, cfg.rules.stuck_sensor, varies=det.feature_varies())
    return StreamPipeline(det, bank, episodes, asm, det.version_ or "unversioned", rules=rules)


class Daemon:
    """The consumer daemon; ``run()`` returns 0 after a clean shutdown."""

    def __init__(self, cfg: Config, det: Any, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.det = det
        self.metrics = metrics or Metrics()
        self.pipeline = build_pipeline(cfg, det)
        self.decoder = RecordDecoder(det.names, cfg.records.entities)
        w = det.config.window
        self.offsets = PartitionOffsets(keep=w - 1, horizon=cfg.records.max_gap or 3600.0)
        self.scored_to: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.first_seen: dict[TopicPartition, int] = {}
        self.fresh: set[TopicPartition] = set()
        self.stashed: set[TopicPartition] = set()
        self.next_offset: dict[TopicPartition, int] = {}  # after the last delivered batch
        self.pending: dict[TopicPartition, Any] = {}  # delivered, not yet committed
        self.published = _BoundedSet(200_000)
        self.stop_event = threading.Event()
        self.consumer: Any = None
        self.last_batch_at = time.time()
        self.last_saved = time.monotonic()
        self.metrics.set("model_info", 1, version=self.pipeline.model_version)
        self._restore_thresholds()

    # -- threshold state across restarts ----------------------------------------------
    def _restore_thresholds(self) -> None:
        path = self.cfg.threshold.state_file
        if not path or not os.path.exists(path):
            return
        try:
            with open(path) as fh:
                saved = json.load(fh)
            if saved.get("model_version") != self.pipeline.model_version:
                log.info("threshold state in %s is for model %s; starting from this model's held-out scores",
                         path, saved.get("model_version"))
                return
            self.pipeline.thresholds = ThresholdBank.from_state(saved["bank"])
            log.info("thresholds restored from %s (%d entities)", path, len(self.pipeline.thresholds))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("cannot restore thresholds from %s (%r); starting from held-out scores", path, e)

    def save_thresholds(self) -> None:
        """Write the trackers' state atomically (tmp file + os.replace)."""
        path = self.cfg.threshold.state_file
        if not path:
            return
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                json.dump({"model_version": self.pipeline.model_version, "bank": self.pipeline.thresholds.to_state()}, fh)
            os.replace(tmp, path)
            self.last_saved = time.monotonic()
        except (OSError, TypeError, ValueError) as e:
            log.warning("cannot save thresholds to %s (%r)", path, e)

    # -- rebalance listener (runs inside poll: keep it short, never call the model) ----
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Commit what was delivered but not yet committed (a commit that failed because the
        # group was rebalancing, e.g. after a broker outage), then keep the partitions'
        # state until the assignment: if they come back to this process, the windows
        # carry on from memory instead of being rebuilt and re-scored.
        pending = {tp: om for tp, om in self.pending.items() if tp in revoked}
        if pending and self.consumer is not None:
            try:
                self.consumer.commit(pending, timeout_ms=COMMIT_TIMEOUT_MS)
                for tp, om in pending.items():
                    self.committed[tp] = om.offset
                    self.pending.pop(tp, None)
            except KafkaError as e:
                log.info("commit on revocation failed (%r); positions kept in memory", e)
        self.stashed.update(revoked)
        log.info("partitions revoked: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        kept = []
        for tp in assigned:
            if tp in self.stashed and tp in self.next_offset and self.consumer is not None:
                self.consumer.seek(tp, self.next_offset[tp])  # carry on where this process got to
                kept.append(tp)
            else:
                self.fresh.add(tp)
        for tp in self.stashed - set(assigned):
            self._forget(tp)
        self.stashed.clear()
        log.info("partitions assigned: %s%s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
                 f" (kept in memory: {len(kept)})" if kept else "")

    def _forget(self, tp: TopicPartition) -> None:
        for ent in self.offsets.drop(tp):
            self.pipeline.assembler.forget(ent)
            self.pipeline.episodes.forget(ent)
        self.scored_to.pop(tp, None)
        self.committed.pop(tp, None)
        self.first_seen.pop(tp, None)
        self.next_offset.pop(tp, None)
        self.pending.pop(tp, None)

    # -- main loop -------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self.stop_event.set()

    def health(self) -> dict[str, object]:
        return {"ok": not self.stop_event.is_set(), "model_version": self.pipeline.model_version,
                "seconds_since_batch": round(time.time() - self.last_batch_at, 3)}

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        cfg = self.cfg
        producer = make_producer(cfg.kafka)
        self._load_published()
        consumer = self.consumer = make_consumer(cfg.kafka, cfg.group, [cfg.topics.input], listener=self)
        log.info("consuming %s as group %s; model %s", cfg.topics.input, cfg.group.id, self.pipeline.model_version)
        # Take what start-up left (TensorFlow, Keras, the model: ~340k objects) out of the
        # garbage collector's reach. Every full collection scanned them all: a ~180 ms stop
        # every few polls while a backlog drains (8 in 200k records, scripts/bench_e2e.py);
        # later collections see only what the loop keeps.
        gc.collect()
        gc.freeze()
        backoff = 0.5
        try:
            while not self.stop_event.is_set():
                try:
                    batch = consumer.poll(timeout_ms=cfg.group.poll_timeout_ms, max_records=cfg.group.max_poll_records)
                    backoff = 0.5
                except KafkaError as e:
                    log.warning("poll failed (%r); retrying in %.1fs", e, backoff)
                    self.metrics.inc("poll_errors_total")
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if batch:
                    self.handle(consumer, producer, batch)
                elif self.pending:
                    self._commit_pending(consumer)
        finally:
            log.info("shutting down: closing consumer and producer")
            self.save_thresholds()
            try:
                self._commit_pending(consumer)
            except Exception as e:  # never let a last commit attempt hide the shutdown
                log.warning("final commit failed (%r)", e)
            try:
                consumer.close(autocommit=False)
            finally:
                producer.close(timeout=10)
        return 0

    def _load_published(self) -> None:
        """Remember the alert ids already on the alerts topic, so a restart does not repeat them."""
        try:
            for v in recent_values(self.cfg.kafka, self.cfg.topics.alerts, RECENT_ALERTS_PER_PARTITION):
                try:
                    self.published.add(codec.loads(v)["alert_id"])
                except (ValueError, KeyError, TypeError):
                    continue
        except KafkaError as e:
            log.warning("could not read back recent alerts (%r); duplicates after a restart are possible", e)
        log.info("remembered %d recent alert ids", len(self.published))

    def _fetch_scored_to(self, consumer: Any, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.fresh.discard(tp)
            try:
                om = consumer.committed(tp, metadata=True)
            except KafkaError as e:
                log.warning("cannot read committed offset of %s (%r); scoring from the current position", tp, e)
                continue
            if om is not None:
                self.committed[tp] = om.offset
                self.scored_to[tp] = int(decode_metadata(om.metadata).get("scored_to", om.offset))
                log.info("%s-%d: resuming at %d, scored up to %d", tp.topic, tp.partition, om.offset, self.scored_to[tp])

    def handle(self, consumer: Any, producer: Any, batch: dict[TopicPartition, list[Any]]) -> None:
        t0 = time.perf_counter()
        cfg, m = self.cfg, self.metrics
        fresh = [tp for tp in batch if tp in self.fresh]
        if fresh:
            self._fetch_scored_to(consumer, fresh)
        outbox = Outbox(producer)
        live: list[Reading] = []
        live_src: list[tuple[TopicPartition, Any]] = []
        n_records = 0
        for tp, recs in batch.items():
            self.first_seen.setdefault(tp, recs[0].offset)
            done_to = self.scored_to.get(tp, -1)
            for rec in recs:
                n_records += 1
                readings = self._decode(tp, rec, outbox)
                if readings is None:
                    continue
                if rec.offset < done_to:  # scored before a restart: rebuild the window only
                    for r in readings:
                        try:
                            self.pipeline.assembler.push(r.entity, r.ts, r.values)
                            self.offsets.note(tp, r.entity, rec.offset, r.ts)
                        except RecordError:
                            pass
                    m.inc("records_rebuilt_total")
                    continue
                live.extend(readings)
                live_src.extend((tp, rec) for _ in readings)
        # 1 score and produce alerts + dead letters
        res = self.pipeline.process(live, now=time.time())
        rejected = set()
        for i, err in res.rejected:
            tp, rec = live_src[i]
            rejected.add(i)
            self._dead_letter(outbox, tp, rec, err.reason, str(err))
        for i, (r, (tp, rec)) in enumerate(zip(live, live_src)):
            if i not in rejected:
                self.offsets.note(tp, r.entity, rec.offset, r.ts)
        new_ids = []
        for a in res.alerts:
            if a.alert_id in self.published:
                m.inc("alerts_suppressed_duplicate_total")
                continue
            outbox.send(cfg.topics.alerts, a.entity, codec.dumps(a.to_dict()))
            new_ids.append(a.alert_id)
            m.inc("alerts_total", kind=a.kind)
        # 2 flush, check every future
        try:
            outbox.confirm(DELIVERY_TIMEOUT_S)
        except DeliveryError as e:
            m.inc("delivery_failures_total")
            log.error("delivery failed (%s); not committing: the batch will be read again", e)
            self._rewind(consumer, list(batch))
            return
        for aid in new_ids:
            self.published.add(aid)
        # 3 commit (with any earlier position whose commit failed)
        for tp, recs in batch.items():
            nxt = recs[-1].offset + 1
            self.next_offset[tp] = nxt
            self.scored_to[tp] = max(self.scored_to.get(tp, -1), nxt)
            pos = self.offsets.position(tp, nxt)
            self.pending[tp] = OffsetAndMetadata(pos, encode_metadata(self.scored_to[tp]), -1)
        self._commit_pending(consumer)
        dt = time.perf_counter() - t0
        self.last_batch_at = time.time()
        m.inc("records_total", n_records)
        m.inc("windows_scored_total", len(res.scored))
        m.inc("batches_total")
        m.set("last_batch_seconds", dt)
        m.set("live_entities", len(self.pipeline.assembler))
        m.set("open_episodes", self.pipeline.episodes.open_count())
        if time.monotonic() - self.last_saved >= cfg.threshold.save_every:
            self.save_thresholds()

    def _commit_pending(self, consumer: Any) -> None:
        if not self.pending:
            return
        commits = dict(self.pending)
        try:
            consumer.commit(commits, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as e:
            self.metrics.inc("commit_failures_total")
            log.warning("commit failed (%r); retrying with the next batch", e)
            return
        for tp, om in commits.items():
            self.committed[tp] = om.offset
            if self.pending.get(tp) is om:
                del self.pending[tp]

    def _decode(self, tp: TopicPartition, rec: Any, outbox: Outbox) -> list[Reading] | None:
        value = rec.value
        try:
            if value is None:
                raise RecordError("not_json", "message has no value")
            if len(value) > self.cfg.records.max_bytes:
                raise RecordError("too_large", f"value is {len(value)} bytes; the limit is records.max_bytes={self.cfg.records.max_bytes}")
            try:
                obj = codec.loads(value)
            except ValueError as e:
                raise RecordError("not_json", f"value is not valid JSON: {e}") from None
            key = rec.key.decode("utf-8", "replace") if rec.key is not None else None
            return self.decoder.decode(obj, key)
        except RecordError as e:
            self._dead_letter(outbox, tp, rec, e.reason, str(e))
            return None

    def _dead_letter(self, outbox: Outbox, tp: TopicPartition, rec: Any, reason: str, message: str) -> None:
        env = codec.dead_letter(rec.key, rec.value, tp.topic, tp.partition, rec.offset, reason, message)
        outbox.send(self.cfg.topics.dead_letter, rec.key, codec.dumps(env))
        self.metrics.inc("dead_letters_total", reason=reason)
        log.warning("dead-lettered partition=%d offset=%d reason=%s", tp.partition, rec.offset, reason)

    def _rewind(self, consumer: Any, tps: list[TopicPartition]) -> None:
        """Go back to the last commit of each partition and rebuild its windows from there."""
        for tp in tps:
            pos = self.committed.get(tp, self.first_seen.get(tp))
            done = self.scored_to.get(tp)
            self._forget(tp)
            if done is not None:
                self.scored_to[tp] = done
            if pos is not None:
                self.committed[tp] = pos
                consumer.seek(tp, pos)
        self.stop_event.wait(1.0)
