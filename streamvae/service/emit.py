"""What a batch sends: its alerts (each id once), one dead letter per refused record, the
dead-letter guard's alarm when most records are refused (streamvae/service/guard.py) and,
with ``topics.scores`` set, one record per window scored for the first time."""

from __future__ import annotations

import logging

from streamvae.config import Config
from streamvae.core.bounded import BoundedSet
from streamvae.core.episodes import stable_id
from streamvae.kafka import codec
from streamvae.kafka.clients import KafkaError, isolation, recent_values
from streamvae.kafka.produce import Outbox
from streamvae.service import failpoints
from streamvae.service.batch import BatchOutcome, DeadLetter
from streamvae.service.guard import RejectionGuard
from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)

RECENT_ALERTS_PER_PARTITION = 5_000
DEAD_LETTER_MAX_BYTES = 1_000_000  # encoded envelope; the producer's max_request_size is 1 MiB
PUBLISHED_IDS = 200_000


class Emitter:
    """Sends a batch outcome's alerts and dead letters through an :class:`Outbox`.

    Alert ids are deterministic, so an alert computed again (a batch read again after a
    restart or a failed delivery) has the id it had: the ids acknowledged are remembered
    (``published``; at start, read back from the tail of the alerts topic) and an alert
    whose id is there is not sent again. Alerts and dead letters are counted in the
    metrics once their batch is acknowledged (:meth:`delivered`), so the counts match
    the topics even when a delivery fails and the batch is sent again.
    """

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.published = BoundedSet(PUBLISHED_IDS)
        self.guard = RejectionGuard(cfg.records.reject_window, cfg.records.reject_share)
        self._unconfirmed: tuple[list[str], list[str]] = ([], [])  # the last batch's alert kinds, dead-letter reasons

    def send(self, outbox: Outbox, out: BatchOutcome, now: float) -> list[str]:
        """Queue the outcome's dead letters and new alerts; the ids of the alerts sent.
        (A batch read again after a failed delivery counts twice in the guard's window.)"""
        kinds: list[str] = []
        self._unconfirmed = (kinds, [dl.error.reason for dl in out.dead_letters])
        for dl in out.dead_letters:
            self._dead_letter(outbox, dl)
        new_ids = []
        event = self.guard.observe(out.records, [d.error.reason for d in out.dead_letters])
        if event is not None:
            alarm = self._rejection(outbox, event, out, now)
            new_ids += alarm
            kinds += ["input_rejected"] * len(alarm)
        for a in out.alerts:
            if a.alert_id in self.published:
                self.metrics.alerts_suppressed_duplicate.inc()
                continue
            outbox.send(self.cfg.topics.alerts, a.entity, codec.dumps(a.to_dict()))
            new_ids.append(a.alert_id)
            kinds.append(a.kind)
        if self.cfg.topics.scores:
            self._scores(outbox, out)
        failpoints.reach("sent")
        return new_ids

    def _scores(self, outbox: Outbox, out: BatchOutcome) -> None:
        """One record per window new to delivery, keyed by entity: what dashboards plot,
        and what proves that every window was scored (the source partition and offset
        name the record that completed it)."""
        topic, version = self.cfg.topics.scores, out.model_version
        assert topic is not None
        for s, tp, off in out.scored():
            rec = {"entity": s.entity, "window_start": s.start_ts, "window_end": s.end_ts, "score": s.score,
                   "threshold": s.threshold, "flagged": s.flagged, "model_version": version,
                   "partition": tp.partition, "offset": off}
            outbox.send(topic, s.entity, codec.dumps(rec))

    def _rejection(self, outbox: Outbox, event: str, out: BatchOutcome, now: float) -> list[str]:
        """The guard's alarm: log, gauge and, when an episode opens, one ``input_rejected`` alert."""
        g, topic = self.guard, self.cfg.topics.input
        self.metrics.input_rejected.set(1 if event == "open" else 0)
        if event == "close":
            log.info("input recovered: %.0f%% of the last %d records of %s refused", 100 * g.refused_share(), g.records, topic)
            return []
        self.metrics.input_rejected_episodes.inc()
        log.error("input rejected: %.0f%% of the last %d records of %s were refused (%s); each went to %s with its "
                  "reason, and scoring goes on", 100 * g.refused_share(), g.records, topic,
                  ", ".join(f"{r} {n}" for r, n in g.reasons().items()), self.cfg.topics.dead_letter)
        first = out.dead_letters[0]  # the batch that opened the episode refused records
        aid = stable_id("input_rejected", first.tp.topic, first.tp.partition, first.offset)
        if aid in self.published:
            return []
        alert = {"alert_id": aid, "kind": "input_rejected", "entity": None, "topic": topic,
                 "refused_share": round(g.refused_share(), 4), "records": g.records, "reasons": g.reasons(),
                 "dead_letter_topic": self.cfg.topics.dead_letter, "partition": first.tp.partition,
                 "offset": first.offset, "detected_at": now}
        outbox.send(self.cfg.topics.alerts, topic, codec.dumps(alert))
        return [aid]

    def delivered(self, ids: list[str]) -> None:
        """The last batch sent is acknowledged: remember its alert ids, count its alerts
        and dead letters."""
        for aid in ids:
            self.published.add(aid)
        kinds, reasons = self._unconfirmed
        for kind in kinds:
            self.metrics.alerts.labels(kind=kind).inc()
        for reason in reasons:
            self.metrics.dead_letters.labels(reason=reason).inc()
        self._unconfirmed = ([], [])

    def load_published(self) -> None:
        """Remember the alert ids already on the alerts topic, so a restart does not repeat them."""
        try:
            for v in recent_values(self.cfg.kafka, self.cfg.topics.alerts, RECENT_ALERTS_PER_PARTITION,
                                   isolation_level=isolation(self.cfg.group)):
                try:
                    self.published.add(codec.loads(v)["alert_id"])
                except (ValueError, KeyError, TypeError):
                    continue
        except KafkaError as e:
            log.warning("could not read back recent alerts (%r); duplicates after a restart are possible", e)
        log.info("remembered %d recent alert ids", len(self.published))

    def _dead_letter(self, outbox: Outbox, dl: DeadLetter) -> None:
        """One dead letter per refused record, listing its bad items; it always fits the
        producer's request size (see ``codec.dead_letter``)."""
        tp, err = dl.tp, dl.error
        env = codec.dead_letter(dl.key, dl.value, tp.topic, tp.partition, dl.offset, err.reason, str(err),
                                items=dl.items, max_bytes=DEAD_LETTER_MAX_BYTES)
        outbox.send(self.cfg.topics.dead_letter, dl.key[:1024] if dl.key is not None else None, codec.dumps(env))
        log.warning("dead-lettered partition=%d offset=%d reason=%s%s", tp.partition, dl.offset, err.reason,
                    f" ({len(dl.items)} bad items)" if dl.items else "",
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": dl.offset, "reason": err.reason})
