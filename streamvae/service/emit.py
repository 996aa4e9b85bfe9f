"""What a batch sends: its alerts (each id once) and one dead letter per refused record."""

from __future__ import annotations

import logging

from streamvae.config import Config
from streamvae.core.bounded import BoundedSet
from streamvae.kafka import codec
from streamvae.kafka.clients import KafkaError, Outbox, recent_values
from streamvae.service.batch import BatchOutcome, DeadLetter
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
    whose id is there is not sent again.
    """

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.published = BoundedSet(PUBLISHED_IDS)

    def send(self, outbox: Outbox, out: BatchOutcome) -> list[str]:
        """Queue the outcome's dead letters and new alerts; the ids of the alerts sent."""
        for dl in out.dead_letters:
            self._dead_letter(outbox, dl)
        new_ids = []
        for a in out.alerts:
            if a.alert_id in self.published:
                self.metrics.inc("alerts_suppressed_duplicate_total")
                continue
            outbox.send(self.cfg.topics.alerts, a.entity, codec.dumps(a.to_dict()))
            new_ids.append(a.alert_id)
            self.metrics.inc("alerts_total", kind=a.kind)
        return new_ids

    def delivered(self, ids: list[str]) -> None:
        for aid in ids:
            self.published.add(aid)

    def load_published(self) -> None:
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

    def _dead_letter(self, outbox: Outbox, dl: DeadLetter) -> None:
        """One dead letter per refused record, listing its bad items; it always fits the
        producer's request size (see ``codec.dead_letter``)."""
        tp, err = dl.tp, dl.error
        env = codec.dead_letter(dl.key, dl.value, tp.topic, tp.partition, dl.offset, err.reason, str(err),
                                items=dl.items, max_bytes=DEAD_LETTER_MAX_BYTES)
        outbox.send(self.cfg.topics.dead_letter, dl.key[:1024] if dl.key is not None else None, codec.dumps(env))
        self.metrics.inc("dead_letters_total", reason=err.reason)
        log.warning("dead-lettered partition=%d offset=%d reason=%s%s", tp.partition, dl.offset, err.reason,
                    f" ({len(dl.items)} bad items)" if dl.items else "")
