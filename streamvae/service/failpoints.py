"""Named points where a test can have the daemon killed (SIGKILL), to prove what a crash
at exactly that moment leaves behind.

``STREAMVAE_FAILPOINT="after_delivery:3"`` kills the process the 3rd time it reaches
``after_delivery`` (``:1`` or no count: the first time). Unset (always, in production)
:func:`reach` is one dictionary lookup. The points:

- ``scored``: a batch is scored; nothing of it is sent;
- ``sent``: its alerts, dead letters and scores are queued to the producer, none
  acknowledged yet (in exactly-once mode: inside the open transaction);
- ``after_delivery``: a batch's alerts and dead letters are acknowledged; its offsets
  are neither committed nor in a checkpoint;
- ``before_commit`` (``group.delivery = "exactly_once"``): the batch's records and
  offsets are in its transaction, which is not committed;
- ``after_checkpoint``: a checkpoint was written; the offsets it covers are not yet
  committed;
- ``after_commit``: a commit was confirmed by the broker; the state since the last
  checkpoint is not saved;
- ``during_swap``: a promoted model is loaded and about to serve;
- ``during_retrain``: a retrain child was just started.
"""

from __future__ import annotations

import os
import signal

_name, _, _count = os.environ.get("STREAMVAE_FAILPOINT", "").partition(":")
_left = {_name: int(_count or 1)} if _name else {}


def reach(point: str) -> None:
    """Die here when the environment names this point (see the module doc)."""
    if point in _left:
        _left[point] -= 1
        if _left[point] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
