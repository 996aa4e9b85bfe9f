"""Offset commits: what is delivered but not yet committed, what is in flight, the answers.

A position is staged (:meth:`Commits.stage`) only after every alert and dead letter of
the records before it was acknowledged, so a commit never covers what was not delivered.
:meth:`Commits.commit` sends every staged position: asynchronously after a batch (one
commit in flight at a time, its answer applied by the loop on a later call), and
synchronously when the feed is quiet and at shutdown. A failed commit stays staged and
goes again with the next one. On revocation the partitions' staged positions go at once,
asynchronously: kafka-python runs the rebalance callback on its IO thread, where a
blocking commit raises.

Why asynchronous after a batch: a synchronous commit stalled the loop for its round
trip to the group coordinator, usually ~4 ms but now and then 50-70 ms
(scripts/bench_e2e.py (e)), and every record arriving meanwhile waited for it.

Examples
--------
A consumer stand-in that answers every commit at once (unit tests use the same shape):

>>> class Now:
...     def commit(self, offsets, timeout_ms=None): pass
...     def commit_async(self, offsets, callback): callback(offsets, None)
>>> c = Commits()
>>> c.stage("t-0", OffsetAndMetadata(5, "{}", -1))
>>> c.commit(Now(), wait=False), c.apply_answers()   # (no synchronous commit, one answer applied)
(False, 1)
>>> c.committed["t-0"], c.pending
(5, {})
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Hashable, Mapping

from streamvae.kafka.clients import KafkaError, OffsetAndMetadata

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_MS = 10_000


class Commits:
    """Staged, in-flight and committed positions per partition (see the module doc).

    ``committed``: the last position the broker confirmed per partition (or the one
    read at assignment); ``failures_``: commits that failed since start.
    """

    def __init__(self, timeout_ms: int = COMMIT_TIMEOUT_MS) -> None:
        self.timeout_ms = timeout_ms
        self.pending: dict[Hashable, Any] = {}  # delivered, not yet committed
        self.committed: dict[Hashable, int] = {}
        self.in_flight = False
        self.sent_at = 0.0  # clock time of the asynchronous commit in flight
        self.failures_ = 0
        self._answers: deque[tuple[Mapping[Hashable, Any], Any, bool]] = deque()  # (commits, response, in flight)

    def stage(self, tp: Hashable, om: Any) -> None:
        """``om`` (an OffsetAndMetadata) is delivered up to its offset: commit it next time."""
        self.pending[tp] = om

    def forget(self, tp: Hashable) -> None:
        self.pending.pop(tp, None)
        self.committed.pop(tp, None)

    def commit(self, consumer: Any, wait: bool = True, now: float = 0.0) -> bool:
        """Send every staged position. ``wait=False``: asynchronously, unless one is in
        flight (the newer positions then go with the next commit; an answer overdue by
        twice the timeout no longer blocks). ``now``: the loop's monotonic clock. True when a
        synchronous commit was confirmed."""
        self.apply_answers()
        if not self.pending:
            return False
        commits = dict(self.pending)
        if not wait:
            if self.in_flight and now - self.sent_at < 2 * self.timeout_ms / 1000:
                return False
            self.in_flight = True
            self.sent_at = now
            try:
                consumer.commit_async(commits, callback=self._answered)
            except KafkaError as e:
                self._answered(commits, e)
            return False
        try:
            consumer.commit(commits, timeout_ms=self.timeout_ms)
        except KafkaError as e:
            self.failures_ += 1
            log.warning("commit failed (%r); retrying with the next batch", e)
            return False
        self._done(commits)
        return True

    def record(self, commits: Mapping[Hashable, Any]) -> None:
        """Positions committed another way (in a transaction): nothing to send for them."""
        self._done(commits)

    def on_revoked(self, consumer: Any, revoked: list[Any]) -> None:
        """Commit the revoked partitions' staged positions before they move (asynchronous:
        queued ahead of the JoinGroup request, so it lands before the partitions move;
        should it fail, the next owner starts from the previous commit, rebuilds the
        windows from there, and re-scored windows give the same alert ids)."""
        staged = {tp: om for tp, om in self.pending.items() if tp in revoked}
        if not staged:
            return
        try:
            consumer.commit_async(staged, callback=self._revoked_answered)
        except (KafkaError, RuntimeError) as e:
            log.info("commit on revocation failed (%r); positions kept in memory", e)

    def apply_answers(self) -> int:
        """Apply the answers kafka-python delivered (on its IO thread) since the last call;
        how many were successful commits."""
        ok = 0
        while self._answers:
            commits, response, flight = self._answers.popleft()
            if flight:
                self.in_flight = False
            if not isinstance(response, BaseException):
                self._done(commits)
                ok += 1
            elif flight:
                self.failures_ += 1
                log.warning("commit failed (%r); retrying with the next batch", response)
            else:
                log.info("commit on revocation failed (%r); positions kept in memory", response)
        return ok

    # kafka-python answers on its IO thread: the answers are handed to the loop
    def _answered(self, commits: Mapping[Hashable, Any], response: Any) -> None:
        self._answers.append((commits, response, True))

    def _revoked_answered(self, commits: Mapping[Hashable, Any], response: Any) -> None:
        self._answers.append((commits, response, False))

    def _done(self, commits: Mapping[Hashable, Any]) -> None:
        for tp, om in commits.items():
            # an asynchronous answer may come after a newer synchronous commit
            self.committed[tp] = max(om.offset, self.committed.get(tp, om.offset))
            if self.pending.get(tp) is om:
                del self.pending[tp]


__all__ = ["Commits", "OffsetAndMetadata"]
