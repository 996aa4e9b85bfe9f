"""``streamvae run``: poll -> process -> produce -> confirm every future -> commit.

One loop iteration handles one poll (:meth:`Daemon.handle`); while the model scores a
big batch, the records of the next are parsed ahead (streamvae/kafka/readahead.py):

1. process: :class:`~streamvae.service.batch.BatchStep` turns the records into one
   outcome, as data: alerts, dead letters (reason and source position), scored and
   normal windows, and per partition the position to commit;
2. produce the alerts and dead letters and confirm every future (acks=all);
3. only then does the retraining lifecycle see the batch;
4. checkpoint the learned state with its positions when one is due
   (streamvae/service/checkpoint.py; and at an empty poll once one is due, if a batch
   was delivered since the last), and commit, per partition, the oldest offset
   still inside an open window, with ``scored_to`` in the commit metadata (at least
   once: at most every ``group.commit_interval_ms``, and at once when a backlog has just
   been read: a short batch after a full one, or a full one that reached the end of
   every partition).

How steps 2 and 4 reach Kafka is ``group.delivery`` (streamvae/service/delivery.py):
at least once, the checkpoint comes before an asynchronous commit; exactly once, step 2
is one transaction that also commits the offsets, and the checkpoint comes after it.

If step 2 fails, nothing after it runs: the learned state goes back to the last
checkpoint and every partition is read again from that checkpoint's positions (what was
delivered since is scored again without being emitted), so a batch is neither lost nor
learned twice. Alert ids are deterministic and the ids already acknowledged are
remembered (and, at start, read back from the tail of the alerts topic).

Between two batches :class:`HotSwap` may switch models (``model.path`` a registry) and
the retrain worker may start or finish a retrain.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streamvae.config import Config
from streamvae.core.clock import SYSTEM, Clock
from streamvae.core.compose import Detector
from streamvae.kafka.clients import KafkaError, OffsetAndMetadata, TopicPartition, make_consumer
from streamvae.kafka.commits import Commits
from streamvae.kafka.offsets import encode_metadata
from streamvae.kafka.produce import DeliveryError, close_producer
from streamvae.kafka.readahead import ReadAhead
from streamvae.service import failpoints, instance
from streamvae.service.batch import BatchOutcome, Marks
from streamvae.service.compose import assemble
from streamvae.service.delivery import make_delivery
from streamvae.service.emit import Emitter
from streamvae.service.metrics import Metrics
from streamvae.service.partitions import Partitions, key
from streamvae.service.ready import Probes
from streamvae.service.runtime import MemoryTrim, settle_runtime

log = logging.getLogger(__name__)


class Daemon:
    """The consumer daemon; ``run()`` returns 0 after a clean shutdown."""

    def __init__(self, cfg: Config, det: Detector, metrics: Metrics | None = None, config_path: str | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.cfg = cfg
        self.det = det
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.parts = assemble(cfg, det, self.metrics, config_path, clock)
        self.pipeline = self.parts.pipeline
        self.partitions = Partitions()
        self.commits = Commits()
        self.delivery = make_delivery(cfg.group, self.commits)
        self.emitter = Emitter(cfg, self.metrics)
        self.stop_event = threading.Event()
        self.consumer: Any = None
        self.ahead: ReadAhead | None = None  # the next batch's records, read while the model scores
        self.last_batch_at = clock.time()
        self.backlog = False  # the last batch was full: more records were waiting
        self.last_checkpoint = clock.monotonic()
        self.unsaved = False  # a batch was delivered since the last checkpoint written
        self.settled = True  # between two batches: the state is one a checkpoint may hold
        self.trim = MemoryTrim(clock)
        self.probes = Probes(cfg.http.ready_poll_age, cfg.group.max_poll_interval_ms / 1000, clock)
        self.metrics.model.info({"version": self.pipeline.model_version})
        self._checkpoint(write=False)  # the state to go back to should the first delivery fail

    # -- rebalance listener (runs inside poll: keep it short, never call the model) ----
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Commit what was delivered, then keep the partitions' state until the assignment:
        # if they come back, the windows carry on from memory instead of being rebuilt.
        # Records read ahead are read again, from wherever the assignment puts them.
        if self.ahead is not None:
            self.ahead.drop()
        if self.consumer is not None:
            self.commits.on_revoked(self.consumer, revoked)
        self.partitions.stashed.update(revoked)
        log.info("partitions revoked: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        parts, kept = self.partitions, []
        for tp in assigned:
            if tp in parts.stashed and tp in parts.next_offset and self.consumer is not None:
                self.consumer.seek(tp, parts.next_offset[tp])  # carry on where this process got to
                kept.append(tp)
            else:
                parts.fresh.add(tp)
        for tp in parts.stashed - set(assigned):
            self._forget(tp)
        parts.stashed.clear()
        log.info("partitions assigned: %s%s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
                 f" (kept in memory: {len(kept)})" if kept else "")

    def _forget(self, tp: TopicPartition) -> None:
        for ent in self._forget_windows(tp):
            self.pipeline.episodes.forget(ent)
        self.partitions.forget(tp)
        self.commits.forget(tp)

    # -- main loop -------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self.stop_event.set()

    def health(self) -> dict[str, object]:
        """``/healthz``: alive (streamvae/service/ready.py), the model serving, how long since a batch."""
        h: dict[str, object] = {**self.probes.health(self.stop_event.is_set()), "model_version": self.pipeline.model_version,
                                "seconds_since_batch": round(self.clock.time() - self.last_batch_at, 3)}
        swapper = self.parts.swapper
        if swapper is not None and swapper.loading is not None:
            h["model_loading"] = swapper.loading.version
        return h

    def readiness(self) -> dict[str, object]:
        """``/readyz``: each condition of streamvae/service/ready.py, and why it fails."""
        return self.probes.ready(self.pipeline.model_version, self.stop_event.is_set())

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        cfg, swapper, retrainer = self.cfg, self.parts.swapper, self.parts.retrainer
        member = instance.claim(cfg.group.instance_id, cfg.group.id)
        # The outputs start on a thread while the consumer joins the group (~0.15 s each
        # here); the first batch waits for them. Exactly once, the consumer waits: the
        # offsets it reads must not be those of a transaction the start is still ending.
        starting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamvae-start")
        outputs = starting.submit(self._start_outputs, member.value)
        starting.shutdown(wait=False)
        producer: Any = outputs.result() if self.delivery.fences else None
        consumer = self.consumer = make_consumer(cfg.kafka, cfg.group, [cfg.topics.input], listener=self,
                                                 instance_id=member.value)
        ahead = self.ahead = ReadAhead(consumer, cfg.group.max_poll_records)
        log.info("consuming %s as group %s%s; model %s", cfg.topics.input, cfg.group.id,
                 f", static member {member.value}" if member.value else "", self.pipeline.model_version)
        settle_runtime()
        backoff = 0.5
        try:
            while not self.stop_event.is_set():
                try:
                    batch = ahead.poll(cfg.group.poll_timeout_ms)
                    backoff = 0.5
                except KafkaError as e:
                    log.warning("poll failed (%r); retrying in %.1fs", e, backoff)
                    self.metrics.poll_errors.inc()
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                self.probes.polled(consumer, bool(batch))
                self.metrics.after_poll(consumer, self.commits.failures_, self.clock.monotonic())
                if self.commits.apply_answers():
                    failpoints.reach("after_commit")
                if producer is None:
                    producer = outputs.result()  # its error, if any, ends the run here
                if batch:
                    self.handle(consumer, producer, batch)
                else:
                    self._quiet(consumer)
                if swapper is not None:
                    self._swap_tick()
                if retrainer is not None:
                    retrainer.tick()
        finally:
            log.info("shutting down: closing consumer and producer")
            if swapper is not None:
                swapper.close()
            if retrainer is not None:
                retrainer.close()
            self.pipeline.close()
            try:
                if self.settled:  # not in the middle of a batch that failed
                    self._checkpoint()
                self.delivery.close(consumer)
            except Exception as e:  # never let a last save or commit hide the shutdown
                log.warning("final checkpoint or commit failed (%r)", e)
            try:
                consumer.close(autocommit=False)
            finally:
                member.release()
                if producer is None and outputs.exception() is None:  # stopped before the first poll returned
                    producer = outputs.result()
                if producer is not None and not close_producer(producer, 10.0):
                    log.warning("stopping with messages the broker has not acknowledged: dropped; their batch "
                                "was not committed, so the next start reads it again")
        return 0

    def _start_outputs(self, instance_id: str | None) -> Any:
        """The producer, the alert ids already published, the samples topic; the producer.

        Exactly once: the transaction a previous process of this slot left open is aborted
        here, before the alert ids already published are read back (read_committed)."""
        cfg = self.cfg
        producer = self.delivery.start(cfg.kafka, instance_id, self.stop_event)
        self.emitter.load_published()
        retrainer = self.parts.retrainer
        if retrainer is not None and retrainer.publish:
            from streamvae.kafka.samples import ensure_samples_topic

            ensure_samples_topic(cfg.kafka, cfg.topics.samples, cfg.retrain.samples_retention_ms)
        return producer

    def handle(self, consumer: Any, producer: Any, batch: dict[TopicPartition, list[Any]]) -> None:
        """One poll: process, produce, confirm every future, then learn and commit."""
        t0 = self.clock.monotonic()
        batch = self._resume(consumer, batch)
        if not batch:
            return
        self.settled = False
        # while the model scores a big batch, the main thread parses the next one
        idle = self.ahead.fetch if self.ahead is not None else None
        out = self.parts.step.process(batch, self.partitions.marks, now=self.clock.time(), idle=idle)
        outbox = self.delivery.outbox()
        new_ids = self.emitter.send(outbox, out, now=self.clock.time())
        offsets = self._offsets(out)
        try:
            self.delivery.deliver(outbox, consumer, offsets)
        except DeliveryError as e:
            self.metrics.delivery_failures.inc()
            log.error("delivery failed (%s); not committing: the state goes back to the last checkpoint", e)
            self._rollback(consumer)
            return
        self.emitter.delivered(new_ids)
        self._learn(out)
        self.partitions.delivered(out.positions)
        self.unsaved = True
        now = self.clock.monotonic()
        latest = self.parts.checkpoints.latest
        new_partition = latest is None or any(key(tp) not in latest.positions for tp in out.positions)
        if new_partition or now - self.last_checkpoint >= self.cfg.threshold.save_every:
            self._checkpoint()  # a partition's first commit comes after a checkpoint that holds it
        # a backlog read to its end: commit that at once
        full = sum(map(len, batch.values())) >= self.cfg.group.max_poll_records
        at_end = full and self.ahead is not None and self.ahead.at_end()
        self.delivery.commit(consumer, offsets, now, drained=at_end or (self.backlog and not full))
        self.backlog = full and not at_end
        self.settled = True
        self.last_batch_at = self.clock.time()
        self.metrics.batch_done(out, batch, self.pipeline, self.clock.monotonic() - t0, now=self.clock.time(),
                                unknown_values=self.parts.decoder.unknown_total_)
        self.trim.after_batch(out.bytes)

    def _resume(self, consumer: Any, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Set the marks of partitions seen for the first time; a partition that must be
        read from elsewhere is sought there and left out of this batch."""
        fresh = [tp for tp in batch if tp in self.partitions.fresh]
        for tp in fresh:
            try:
                om = consumer.committed(tp, metadata=True)
            except KafkaError as e:
                log.warning("cannot read committed offset of %s (%r); scoring from the current position", tp, e,
                            extra={"topic": tp.topic, "partition": tp.partition})
                om = None
            if om is not None:
                self.commits.committed[tp] = om.offset
            first = batch[tp][0].offset
            read_from = self.partitions.resume(tp, om, first, self.parts.checkpoints.loaded)
            if read_from != first:
                consumer.seek(tp, read_from)
                batch = {k: v for k, v in batch.items() if k != tp}
        if fresh and not self.delivery.checkpoint_ahead:
            self._checkpoint()  # its first commit, in a transaction, must come after a checkpoint that holds it
        return batch

    def _offsets(self, out: BatchOutcome) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition, the position to commit after this batch, with how far it is then
        emitted and this process's checkpoint lineage in the metadata."""
        marks, lineage = self.partitions.marks, self.parts.checkpoints.lineage
        return {tp: OffsetAndMetadata(pos, encode_metadata(max(marks.get(tp, Marks()).emitted_to, nxt), lineage), -1)
                for tp, (pos, nxt) in out.positions.items()}

    def _learn(self, out: BatchOutcome) -> None:
        """A delivered batch: the lifecycle observes what is new to it."""
        learn, retrainer, swapper = out.learn, self.parts.retrainer, self.parts.swapper
        if retrainer is not None:
            for topic, k, v in retrainer.observe(learn, self.pipeline.model_version):
                self.delivery.sample(topic, k, v)
        if swapper is not None:
            swapper.note_batch(learn, retrainer is not None and retrainer.fleet_shift_on)

    def _quiet(self, consumer: Any) -> None:
        """An empty poll: checkpoint, commit and give memory back if any of it waits."""
        now = self.clock.monotonic()
        # what was learned since the last checkpoint is saved, whether or not its offsets
        # are committed yet (a backlog's end is committed at once, before any checkpoint is due)
        if (self.commits.pending or self.unsaved) and now - self.last_checkpoint >= min(self.cfg.threshold.save_every, 10.0):
            self._checkpoint()
        self.delivery.quiet(consumer, now)
        self.trim.quiet()

    def _checkpoint(self, write: bool = True) -> None:
        """Save the learned state with the positions it is as of (only ever between delivered batches)."""
        retrainer = self.parts.retrainer
        positions = self.partitions.checkpoint_positions(self.parts.offsets.position)
        ck = self.parts.checkpoints
        lifecycle = retrainer.state() if retrainer is not None and write else {}
        ck.take(self.pipeline.model_version, positions, self.pipeline.state(), lifecycle, write=write)
        if write:
            self.unsaved = False
            self.metrics.count_to(self.metrics.checkpoint_failures, ck.failures_)
            failpoints.reach("after_checkpoint")
        self.last_checkpoint = self.clock.monotonic()

    def _rollback(self, consumer: Any) -> None:
        """Back to the last checkpoint: its state, and every partition read again from its position."""
        ck = self.parts.checkpoints.latest
        assert ck is not None  # one is taken at start
        if self.ahead is not None:
            self.ahead.drop()
        if ck.model_version == self.pipeline.model_version:
            self.pipeline.restore(ck.pipeline)
        for tp in list(self.partitions.marks):
            to = ck.positions.get((tp.topic, tp.partition), self.partitions.start[tp])
            self._forget_windows(tp)
            consumer.seek(tp, self.partitions.rolled_back(tp, to))
        self.delivery.rolled_back()
        self.settled = True
        self.stop_event.wait(1.0)

    def _forget_windows(self, tp: TopicPartition) -> list[str]:
        """Drop the partition's windows in progress (rebuilt when it is read again); its entities."""
        ents = self.parts.offsets.drop(tp)
        for ent in ents:
            self.pipeline.assembler.forget(ent)
        return ents

    def _swap_tick(self) -> None:
        """Between two batches: let :class:`HotSwap` finish a load and switch models."""
        assert self.parts.swapper is not None
        new = self.parts.swapper.tick(self.pipeline)
        if new is None:
            return
        self.det = new
        self.metrics.model.info({"version": self.pipeline.model_version})
        if self.parts.retrainer is not None:
            self.parts.retrainer.model_swapped(self.parts.swapper.above_own_, getattr(new, "threshold_", None))
        self._checkpoint()  # a restart must not bring back the old model's thresholds
        # The old model's objects sit in the frozen generation (see run()); give them back
        # to the collector, free them in one full pass (once per swap), freeze the rest.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
