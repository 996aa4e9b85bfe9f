"""``streamvae run``: poll -> decode -> pipeline -> produce -> await acks -> commit.

One loop iteration handles one poll:

1. decode every record; a bad one becomes a dead letter with its reason;
2. records before the partition's ``scored_to`` (already scored before a restart) only
   rebuild windows; the rest go through ``StreamPipeline.process`` (steps 1 and 2 run
   lazily inside it, as it assembles windows: on a big batch decoding overlaps the model);
3. produce alerts and dead letters, flush, check every future (acks=all);
4. commit, per partition, the oldest offset still inside an open window, with
   ``scored_to`` in the commit metadata.

If step 3 fails, step 4 does not run: the partitions are rewound to their last commit
and their windows rebuilt, so the batch is read again and nothing is lost. Alert ids
are deterministic and the ids already acknowledged are remembered (and, at start, read
back from the tail of the alerts topic), so a re-read does not publish an alert twice.

Between two batches, when ``model.path`` is a registry, :class:`HotSwap` reads the
control topic; a promotion or rollback loads the named version in a background thread
(load, warm up, score recent normal windows) and the pipeline switches to it at the
next gap between batches, thresholds recalibrated on the new model's scores.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterator

from streamvae.config import Config
from streamvae.core.compose import build_pipeline, max_gap
from streamvae.core.pipeline import Reading
from streamvae.core.records import ItemError, RecordDecoder
from streamvae.core.bank import ThresholdBank
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
from streamvae.registry import Registry, is_registry
from streamvae.service import instance
from streamvae.service.intake import Intake
from streamvae.service.metrics import Metrics
from streamvae.service.hotswap import HotSwap
from streamvae.service.retrain import RetrainWorker
from streamvae.service.runtime import BIG_BATCH_BYTES, TRIM_EVERY_S, give_back_memory, settle_runtime

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_MS = 10_000
RECENT_ALERTS_PER_PARTITION = 5_000
DEAD_LETTER_MAX_BYTES = 1_000_000  # encoded envelope; the producer's max_request_size is 1 MiB


@dataclass
class _Refusal:
    """What one record had wrong: the reason and, for a block, its bad items."""

    tp: Any
    rec: Any
    error: RecordError
    items: list[dict[str, Any]]


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


class Daemon:
    """The consumer daemon; ``run()`` returns 0 after a clean shutdown."""

    def __init__(self, cfg: Config, det: Any, metrics: Metrics | None = None, config_path: str | None = None) -> None:
        self.cfg = cfg
        self.det = det
        self.metrics = metrics or Metrics()
        self.pipeline = build_pipeline(cfg, det)
        self.decoder = RecordDecoder(det.names, cfg.records.entities, max_future_s=cfg.records.max_future_s)
        self.intake = Intake(self.decoder, cfg.records.max_record_bytes)
        w = det.config.window
        self.offsets = PartitionOffsets(keep=w - 1, horizon=max_gap(cfg, det.config) or 3600.0)
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
        self.last_trim = 0.0
        self.untrimmed = False  # batches ran since memory was last given back
        self.last_commit = 0.0  # monotonic time of the last commit attempt
        self.commit_in_flight = False  # an asynchronous commit from the loop awaits its answer
        self.commit_sent_at = 0.0
        self.commit_answers: deque[tuple[dict[TopicPartition, Any], Any]] = deque()
        self.metrics.set("model_info", 1, version=self.pipeline.model_version)
        self.swapper: HotSwap | None = None
        if is_registry(cfg.model.path):
            self.swapper = HotSwap(cfg, Registry(cfg.model.path), self.metrics, det)
            log.info("serving model %s, CURRENT of registry %s; listening for promotions on %s",
                     self.pipeline.model_version, cfg.model.path, cfg.topics.control)
        self._restore_thresholds()
        r = cfg.retrain
        self.retrainer: RetrainWorker | None = None
        if r.enabled or r.buffer == "kafka" or r.state_dir:
            self.retrainer = RetrainWorker(cfg, config_path, det.config.window, det.config.n_features, self.metrics)

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
            if self.pipeline.baselines is not None:
                self.pipeline.baselines.load_state(saved.get("baselines", {}))
            log.info("thresholds restored from %s (%d entities, %d accepted baselines)", path,
                     len(self.pipeline.thresholds), len(self.pipeline.baselines or ()))
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
                b = self.pipeline.baselines
                json.dump({"model_version": self.pipeline.model_version, "bank": self.pipeline.thresholds.to_state(),
                           "baselines": b.to_state() if b is not None else {}}, fh)
            os.replace(tmp, path)
            self.last_saved = time.monotonic()
        except (OSError, TypeError, ValueError) as e:
            log.warning("cannot save thresholds to %s (%r)", path, e)

    # -- rebalance listener (runs inside poll: keep it short, never call the model) ----
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Commit what was delivered but not yet committed (a commit that failed because
        # the group was rebalancing, e.g. after a broker outage), then
        # keep the partitions' state until the assignment: if they come back to this
        # process, the windows carry on from memory instead of being rebuilt and re-scored.
        # The commit is asynchronous: kafka-python 3 runs this callback on its IO thread,
        # where a blocking commit raises; it is queued ahead of the JoinGroup request on
        # the coordinator's connection, so it lands before the partitions move. Should it
        # fail, the next owner starts from the previous commit: windows are rebuilt from
        # there, and re-scored ones give the same (deterministic) alert ids.
        pending = {tp: om for tp, om in self.pending.items() if tp in revoked}
        if pending and self.consumer is not None:
            try:
                self.consumer.commit_async(pending, callback=self._revoked_committed)
            except (KafkaError, RuntimeError) as e:
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
        h: dict[str, object] = {"ok": not self.stop_event.is_set(), "model_version": self.pipeline.model_version,
                                "seconds_since_batch": round(time.time() - self.last_batch_at, 3)}
        loading = self.swapper.loading if self.swapper is not None else None
        if loading is not None:
            h["model_loading"] = loading.version
        return h

    def _swap_tick(self) -> None:
        """Between two batches: let :class:`HotSwap` finish a load and switch models."""
        assert self.swapper is not None
        new = self.swapper.tick(self.pipeline)
        if new is None:
            return
        self.det = new
        if self.retrainer is not None:
            self.retrainer.model_swapped()
        self.save_thresholds()  # a restart must not bring back the old model's thresholds
        # The old model's objects sit in the frozen generation (see run()); give them back
        # to the collector, free them in one full pass (once per swap), freeze the rest.
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        cfg = self.cfg
        producer = make_producer(cfg.kafka)
        self._load_published()
        if self.retrainer is not None and self.retrainer.publish:
            from streamvae.kafka.samples import ensure_samples_topic

            ensure_samples_topic(cfg.kafka, cfg.topics.samples, cfg.retrain.samples_retention_ms)
        member = instance.claim(cfg.group.instance_id, cfg.group.id)
        consumer = self.consumer = make_consumer(cfg.kafka, cfg.group, [cfg.topics.input], listener=self,
                                                 instance_id=member.value)
        log.info("consuming %s as group %s%s; model %s", cfg.topics.input, cfg.group.id,
                 f", static member {member.value}" if member.value else "", self.pipeline.model_version)
        settle_runtime()
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
                self._apply_commit_answers()
                if batch:
                    self.handle(consumer, producer, batch)
                else:
                    if self.pending:
                        self._commit_pending(consumer)
                    if self.untrimmed:
                        self._trim()
                if self.swapper is not None:
                    self._swap_tick()
                if self.retrainer is not None:
                    self.retrainer.tick()
        finally:
            log.info("shutting down: closing consumer and producer")
            if self.swapper is not None:
                self.swapper.close()
            if self.retrainer is not None:
                self.retrainer.close()
            self.save_thresholds()
            self.pipeline.close()
            try:
                self._commit_pending(consumer)
            except Exception as e:  # never let a last commit attempt hide the shutdown
                log.warning("final commit failed (%r)", e)
            try:
                consumer.close(autocommit=False)
            finally:
                member.release()
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

    def _readings(self, batch: dict[TopicPartition, list[Any]], refused: dict[tuple[TopicPartition, int], _Refusal],
                  live: list[Reading], live_src: list[tuple[TopicPartition, Any]], counted: list[int]) -> Iterator[Reading]:
        """The batch's live readings in arrival order, decoded as the pipeline asks for them;
        each is also noted in ``live`` with its source in ``live_src``. What a record had
        wrong goes to ``refused`` (one entry per record, its good readings still count).
        Records before ``scored_to`` were scored (and their dead letters sent) before a
        restart: they only rebuild windows."""
        now = time.time()
        decode = self.intake.decode
        for tp, recs in batch.items():
            self.first_seen.setdefault(tp, recs[0].offset)
            done_to = self.scored_to.get(tp, -1)
            for rec in recs:
                counted[0] += 1
                counted[1] += len(rec.value or b"")
                readings, err = decode(rec.key, rec.value, now)
                if rec.offset < done_to:  # scored before a restart: rebuild the window only
                    for r in readings:
                        try:
                            self.pipeline.assembler.push(r.entity, r.ts, r.values)
                            self.offsets.note(tp, r.entity, rec.offset, r.ts)
                        except RecordError:
                            pass
                    self.metrics.inc("records_rebuilt_total")
                    continue
                if err is not None:
                    refused[(tp, rec.offset)] = _Refusal(tp, rec, err, err.listing() if isinstance(err, ItemError) else [])
                for r in readings:
                    live.append(r)
                    live_src.append((tp, rec))
                    yield r

    def handle(self, consumer: Any, producer: Any, batch: dict[TopicPartition, list[Any]]) -> None:
        t0 = time.perf_counter()
        cfg, m = self.cfg, self.metrics
        fresh = [tp for tp in batch if tp in self.fresh]
        if fresh:
            self._fetch_scored_to(consumer, fresh)
        outbox = Outbox(producer)
        live: list[Reading] = []
        live_src: list[tuple[TopicPartition, Any]] = []
        refused: dict[tuple[TopicPartition, int], _Refusal] = {}
        counted = [0, 0]  # records, bytes
        # 1 decode (lazily: the pipeline pulls the readings as it assembles windows, so
        # decoding overlaps the model's work on a big batch), score, produce alerts + dead letters
        res = self.pipeline.process(self._readings(batch, refused, live, live_src, counted), now=time.time(),
                                    size=sum(len(recs) for recs in batch.values()))
        n_records = counted[0]
        if self.retrainer is not None:
            self.retrainer.after_batch(res, producer, self.pipeline.model_version)
        if self.swapper is not None:
            self.swapper.note_batch(res, self.retrainer is not None and self.retrainer.buffer.fleet_shift_on)
        rejected = set()
        for i, err in res.rejected:  # readings the windows refused: listed in their record's one dead letter
            tp, rec = live_src[i]
            rejected.add(i)
            ref = refused.setdefault((tp, rec.offset), _Refusal(tp, rec, err, []))
            ref.items.append({"index": None, "reason": err.reason, "message": str(err)})
        for ref in refused.values():
            self._dead_letter(outbox, ref)
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
        if time.monotonic() - self.last_commit >= cfg.group.commit_interval_ms / 1000.0:
            self._commit_pending(consumer, wait=False)
        dt = time.perf_counter() - t0
        self.last_batch_at = time.time()
        m.inc("records_total", n_records)
        m.inc("windows_scored_total", len(res.scored))
        m.inc("batches_total")
        m.set("last_batch_seconds", dt)
        m.set("live_entities", len(self.pipeline.assembler))
        m.set("open_episodes", self.pipeline.episodes.open_count())
        m.set("changes_accepted", self.pipeline.accepted_)  # since start: persisting changes made an entity's new normal
        m.set("clock_resets", self.pipeline.assembler.clock_resets_)
        m.set("unknown_feature_values", self.decoder.unknown_total_)  # since start: values of features the model lacks  # since start: steps back that began a new sequence
        if time.monotonic() - self.last_saved >= cfg.threshold.save_every:
            self.save_thresholds()
        self.untrimmed = True
        if counted[1] > BIG_BATCH_BYTES:
            self._trim()

    def _trim(self) -> None:
        """Give freed memory back (see :func:`give_back_memory`) after a batch of huge
        records and when the feed goes quiet, at most every ``TRIM_EVERY_S``."""
        if time.monotonic() - self.last_trim >= TRIM_EVERY_S:
            self.last_trim = time.monotonic()
            self.untrimmed = False
            give_back_memory()

    def _commit_pending(self, consumer: Any, wait: bool = True) -> None:
        """Commit every delivered position not yet committed (a commit that failed stays
        pending and goes again later).

        Called after a batch at most every ``group.commit_interval_ms`` (1 s by default),
        when a poll comes back empty, on revocation and at shutdown. Delivery does not
        depend on how: a position is committed only after the alerts and dead letters of
        the records before it were acknowledged; after a crash up to one interval of
        records is read again, and the alerts it gives again are dropped by their ids
        (``_load_published``).

        After a batch (``wait=False``) the commit is asynchronous, one in flight at a
        time: its answer comes back through a later ``poll`` and is applied by the loop
        (:meth:`_apply_commit_answers`). A synchronous commit stalled the loop for its
        round trip to the group coordinator, usually ~4 ms but now and then 50-70 ms
        (scripts/bench_e2e.py (e)), and every record arriving meanwhile waited for it.
        (Before the interval, one commit per batch: produce -> score p50 51 / p99 129 ms
        at 5,900 records/s; with it, 23 / 72 ms, one run each.) On an empty poll and at
        shutdown the commit waits."""
        self._apply_commit_answers()
        if not self.pending:
            return
        self.last_commit = time.monotonic()
        commits = dict(self.pending)
        if not wait:
            if self.commit_in_flight and self.last_commit - self.commit_sent_at < 2 * COMMIT_TIMEOUT_MS / 1000:
                return  # the newer positions go with the next commit
            self.commit_in_flight = True
            self.commit_sent_at = self.last_commit
            try:
                consumer.commit_async(commits, callback=self._commit_answered)
            except KafkaError as e:
                self._commit_answered(commits, e)
            return
        try:
            consumer.commit(commits, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as e:
            self.metrics.inc("commit_failures_total")
            log.warning("commit failed (%r); retrying with the next batch", e)
            return
        self._committed(commits)

    def _commit_answered(self, commits: dict[TopicPartition, Any], response: Any) -> None:
        # kafka-python calls this on its IO thread: hand the answer to the loop
        self.commit_answers.append((commits, response))

    def _apply_commit_answers(self) -> None:
        while self.commit_answers:
            commits, response = self.commit_answers.popleft()
            self.commit_in_flight = False
            if isinstance(response, BaseException):
                self.metrics.inc("commit_failures_total")
                log.warning("commit failed (%r); retrying with the next batch", response)
            else:
                self._committed(commits)

    def _revoked_committed(self, commits: dict[TopicPartition, Any], response: Any) -> None:
        if isinstance(response, BaseException):
            log.info("commit on revocation failed (%r); positions kept in memory", response)
            return
        self._committed(commits)

    def _committed(self, commits: dict[TopicPartition, Any]) -> None:
        for tp, om in commits.items():
            # an asynchronous answer may come after a newer synchronous commit
            self.committed[tp] = max(om.offset, self.committed.get(tp, om.offset))
            if self.pending.get(tp) is om:
                del self.pending[tp]

    def _dead_letter(self, outbox: Outbox, ref: _Refusal) -> None:
        """One dead letter per refused record, listing its bad items; it always fits the
        producer's request size (see ``codec.dead_letter``)."""
        tp, rec, err = ref.tp, ref.rec, ref.error
        env = codec.dead_letter(rec.key, rec.value, tp.topic, tp.partition, rec.offset, err.reason, str(err),
                                items=ref.items, max_bytes=DEAD_LETTER_MAX_BYTES)
        key = rec.key[:1024] if rec.key is not None else None
        outbox.send(self.cfg.topics.dead_letter, key, codec.dumps(env))
        self.metrics.inc("dead_letters_total", reason=err.reason)
        log.warning("dead-lettered partition=%d offset=%d reason=%s%s", tp.partition, rec.offset, err.reason,
                    f" ({len(ref.items)} bad items)" if ref.items else "")

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
