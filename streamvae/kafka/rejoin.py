"""A group leader that kafka-python 3.0 leaves with no partitions, for good, closed.

When the topic's metadata changes under a joined consumer (partitions added, or the
topic created after the consumer subscribed), kafka-python's ``need_rejoin`` turns True
because the assignment was made on older metadata, and the next poll starts a JoinGroup
/ SyncGroup task. If the poll's timer ends first, the task is left in flight for the
next poll to await. But the leader's own assignment step, inside that task, records the
new metadata as the one it assigned on, so ``need_rejoin`` is False again by the next
poll: no poll awaits the task, its assignment is never applied, the heartbeat stays off
from the join, and the consumer polls an empty (or old) assignment forever, no error and
no log line above DEBUG.

Seen in CI (2026-12-07, tests/integration/test_secure_kafka.py): the daemon subscribed
to a topic whose metadata it did not have yet, was assigned nothing, learned of the
topic's 2 partitions 100 ms later, and the poll that started the rejoin had 9 ms left
of its 200. The join answered 17 ms later; the daemon then polled with no partitions
for the test's 120 s. On a user's plant the same happens to the group's leader when
partitions are added to the input topic.

:func:`install` makes ``need_rejoin`` also True while a join task is pending, in flight
or finished but not applied. In flight, the next poll awaits it as kafka-python means to
(no new round). Finished, kafka-python starts a fresh join, one more round of the
group's rebalance, and applies that one. kafka-python 3.0.x only (the version pinned);
tests/integration/test_rejoin.py shows the wedge without it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import kafka
from kafka.coordinator.consumer import ConsumerCoordinator

log = logging.getLogger(__name__)

_ORIGINAL = ConsumerCoordinator.need_rejoin


def supported() -> bool:
    return str(kafka.__version__).startswith("3.0.")


@functools.wraps(_ORIGINAL)
def _need_rejoin(self: Any) -> bool:
    if _ORIGINAL(self):
        return True
    task = self._join_task
    if task is None:
        return False
    if task.is_done and getattr(self, "_streamvae_noted", None) is not task:  # one line per stray join
        self._streamvae_noted = task
        log.info("group %s: a join finished between two polls and was never applied; joining again", self.group_id)
    return True


def install() -> bool:
    """Close it (idempotent); False where kafka-python is not 3.0.x."""
    if not supported():
        return False
    ConsumerCoordinator.need_rejoin = _need_rejoin
    return True


def uninstall() -> None:
    ConsumerCoordinator.need_rejoin = _ORIGINAL
