"""At least once, while the broker is away: a batch is declared lost only when the
producer has given up on it (streamvae/service/delivery.py, ``AtLeastOnce``), and a daemon
stopping meanwhile closes its producer without an error (``close_producer``).

On the real broker, stopped mid-delivery. Before, the daemon gave up after a 30 s flush
while the producer went on retrying the batch's messages: the state went back to its
checkpoint and scored the batch again, and the first copies landed as well, so each
alert reached the topic twice, scored by two different states (a CI run of
tests/integration/test_proof.py saw such a repeat differ)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from streamvae.config import KafkaConfig
from streamvae.kafka.clients import create_topic, recent_values
from streamvae.kafka.commits import Commits
from streamvae.kafka.produce import DeliveryError, close_producer
from streamvae.service.delivery import AtLeastOnce

CONFIRM_S = 2.0  # the first flush's wait, shortened: the broker stays away longer than this
DOWN_S = 6.0


def deliver_in_thread(d: AtLeastOnce, topic: str, value: bytes) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []
    box = d.outbox()
    box.send(topic, "pump-1", value)

    def run() -> None:
        try:
            d.deliver(box, None, {})
        except BaseException as e:  # noqa: BLE001  (the test reads it)
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def test_a_batch_waits_out_an_outage_and_lands_once_and_a_stop_ends_the_wait_and_closes(own_broker: Any) -> None:
    k = KafkaConfig(bootstrap_servers=own_broker.bootstrap)
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    create_topic(k, topic)
    stop = threading.Event()
    d = AtLeastOnce(Commits(), 1.0, confirm_s=CONFIRM_S)
    d.start(k, None, stop)
    assert d.verdict_s >= 120.0  # the producer's delivery timeout, and a margin
    try:
        t, errors = deliver_in_thread(d, topic, b"before")  # the producer knows the topic's leader
        t.join(30.0)
        assert not errors and not t.is_alive()

        own_broker.stop()
        t, errors = deliver_in_thread(d, topic, b"stopping")
        time.sleep(CONFIRM_S + 1.0)
        assert t.is_alive() and not errors, errors  # past the first flush's wait: waiting for the verdict
        stop.set()  # the daemon stops: it does not wait out the outage
        t.join(15.0)
        assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], DeliveryError), errors
        stop.clear()

        t, errors = deliver_in_thread(d, topic, b"during")
        time.sleep(DOWN_S)  # three times the first flush's wait
        assert t.is_alive() and not errors, errors  # still waiting for the producer's verdict
        own_broker.restart()
        t.join(90.0)
        assert not t.is_alive() and not errors, errors
        # each once: "stopping" too, which the producer went on retrying
        assert sorted(recent_values(k, topic, 10)) == [b"before", b"during", b"stopping"]

        own_broker.stop()  # the daemon stops during an outage: its producer still holds a message
        d.outbox().send(topic, "pump-1", b"unanswered")
        assert close_producer(d.producer, CONFIRM_S) is False  # kafka-python's close raised here
        assert d.producer._closed  # closed all the same: no exit hook left to raise at exit
    finally:
        close_producer(d.producer, CONFIRM_S)
