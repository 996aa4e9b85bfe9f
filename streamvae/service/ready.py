"""Alive (``/healthz``) and ready (``/readyz``): what the daemon's loop notes after each poll.

Alive: the loop runs. 200 from start-up on, 503 once the daemon is stopping, or when the
loop has not come back to poll for longer than ``group.max_poll_interval_ms`` (by then
the consumer has left its group anyway: a restart is the cure).

Ready, 200 only when all of these hold (the JSON body lists each, and why it fails):

- ``loop_running``: the loop polls (not starting, stopping or stalled);
- ``partitions_assigned``: at least one partition of the input is assigned;
- ``model_loaded``: a model serves;
- ``recent_poll``: the last poll that reached the broker is at most
  ``http.ready_poll_age`` seconds old;
- ``broker_reachable``: after the last poll the consumer held a live broker connection.

"Reached the broker" needs a signal of its own: kafka-python's ``poll`` does not raise
when the broker is down, it returns nothing. A poll reached the broker when it returned
records, or when right after it the consumer held at least one live connection to a
broker: one its client calls ``connected`` (set up and handshaken), asked for each broker
of the cluster's metadata (a few us; no request is sent). kafka-python's own
``connection-count`` metric will not do: it counts connections still being set up, and
while the broker is down the client retries one every backoff, so a poll that looked
just then passed as one that reached the broker (a fresh-clone CI run saw /readyz's
``recent_poll`` stay fresh 4 s after the broker stopped). A broker that stops, crashes or
refuses connections shows at once (its sockets close). One that hangs with its sockets
open shows when kafka-python's request timeout (``request_timeout_ms``, 30 s) closes the
connection. A probe request would tell sooner, but a request queues behind the
consumer's pending fetch on the same connection: a ``ListOffsets`` took 300-500 ms on an
idle local broker (``fetch_max_wait_ms`` 500), time the loop would then not poll.

Examples
--------
>>> from streamvae.core.clock import FakeClock
>>> clock = FakeClock(0.0)
>>> p = Probes(ready_poll_age=3.0, stall_after=300.0, clock=clock)
>>> p.ready("v1", stopping=False)["ready"], p.health(stopping=False)["loop"]
(False, 'starting')
>>> p.note_poll(assigned=2, got_records=False, connections=1)
>>> p.ready("v1", stopping=False)["ready"]
True
>>> clock.advance(1.0); p.note_poll(assigned=2, got_records=False, connections=0)  # the broker went away
>>> r = p.ready("v1", stopping=False)
>>> r["ready"], r["checks"]["broker_reachable"]["why"]
(False, 'the consumer holds no live connection to any broker')
>>> clock.advance(3.0); p.note_poll(assigned=2, got_records=False, connections=0)
>>> p.ready("v1", stopping=False)["checks"]["recent_poll"]["why"]
'the last poll that reached the broker was 4.0 s ago; http.ready_poll_age = 3'
"""

from __future__ import annotations

from typing import Any

from streamvae.core.clock import SYSTEM, Clock


class Probes:
    """The loop's notes after each poll (:meth:`polled`, on the loop's thread) and what
    ``/healthz`` (:meth:`health`) and ``/readyz`` (:meth:`ready`) make of them (on the
    HTTP server's threads; they only read numbers the loop writes)."""

    def __init__(self, ready_poll_age: float, stall_after: float, clock: Clock = SYSTEM) -> None:
        self.ready_poll_age = ready_poll_age
        self.stall_after = stall_after
        self.clock = clock
        self.polled_at_: float | None = None  # monotonic time of the last poll
        self.reached_at_: float | None = None  # ... of the last poll that reached the broker
        self.assigned_ = 0
        self.connections_: int | None = None  # None: not known (the consumer keeps no metrics)

    # -- the loop's side --------------------------------------------------------------------
    def polled(self, consumer: Any, got_records: bool) -> None:
        """After a poll of ``consumer`` (a KafkaConsumer) that returned records or not."""
        self.note_poll(len(consumer.assignment()), got_records, self._connections(consumer))

    def note_poll(self, assigned: int, got_records: bool, connections: int | None) -> None:
        now = self.clock.monotonic()
        self.polled_at_ = now
        self.assigned_ = assigned
        self.connections_ = connections
        if got_records or connections:
            self.reached_at_ = now

    def _connections(self, consumer: Any) -> int | None:
        """Brokers ``consumer``'s client holds a live connection to; None when the client
        cannot tell (no ``_client`` with ``connected`` and ``cluster``: not kafka-python)."""
        client = getattr(consumer, "_client", None)
        if client is None or not hasattr(client, "connected") or not hasattr(client, "cluster"):
            return None
        return sum(1 for b in client.cluster.brokers() if client.connected(b.node_id))

    # -- the HTTP side ------------------------------------------------------------------------
    def loop_state(self, stopping: bool) -> str:
        """``starting`` (no poll yet), ``running``, ``stalled`` or ``stopping``."""
        if stopping:
            return "stopping"
        if self.polled_at_ is None:
            return "starting"
        return "stalled" if self.clock.monotonic() - self.polled_at_ > self.stall_after else "running"

    def health(self, stopping: bool) -> dict[str, Any]:
        """``/healthz``'s body: ``ok`` while the loop starts or runs."""
        state = self.loop_state(stopping)
        since = None if self.polled_at_ is None else round(self.clock.monotonic() - self.polled_at_, 3)
        return {"ok": state in ("starting", "running"), "loop": state, "seconds_since_poll": since}

    def ready(self, model_version: str | None, stopping: bool) -> dict[str, Any]:
        """``/readyz``'s body: ``ready`` and, per check, ``ok`` and (when not) ``why``."""
        state = self.loop_state(stopping)
        age = None if self.reached_at_ is None else self.clock.monotonic() - self.reached_at_
        checks = {
            "loop_running": _check(state == "running", f"the loop is {state}", loop=state),
            "partitions_assigned": _check(self.assigned_ >= 1, "no partition of the input is assigned to this consumer",
                                          assigned=self.assigned_),
            "model_loaded": _check(bool(model_version), "no model serves", model_version=model_version),
            "recent_poll": _check(age is not None and age <= self.ready_poll_age,
                                  "no poll has reached the broker yet" if age is None else
                                  f"the last poll that reached the broker was {age:.1f} s ago; "
                                  f"http.ready_poll_age = {self.ready_poll_age:g}",
                                  seconds_ago=None if age is None else round(age, 3)),
            "broker_reachable": _check(bool(self.connections_),
                                       "the consumer holds no live connection to any broker" if self.connections_ is not None
                                       else "unknown: the consumer's client cannot tell its connections",
                                       connections=self.connections_),
        }
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


def _check(ok: bool, why: str, **values: Any) -> dict[str, Any]:
    return {"ok": ok, **values} if ok else {"ok": False, "why": why, **values}
