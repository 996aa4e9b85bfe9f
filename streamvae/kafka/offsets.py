"""Where to commit so that no open window is lost on a restart or a rebalance.

For every partition we remember, per entity, the offsets of the readings its open
window still needs (the last W-1). The commit position is the oldest of those (or the
next offset when nothing is open), and the commit metadata records how far scoring got
(``scored_to``). After a restart the consumer resumes at the commit position; records
before ``scored_to`` only rebuild windows (no scoring, no alerts), the rest are scored.

An entity silent for longer than ``horizon`` seconds (event time) stops pinning the
position: its next reading starts a new window sequence anyway (max_gap), and a dead
entity must not hold the group's position back for days.

Examples
--------
>>> o = PartitionOffsets(keep=2, horizon=60.0)
>>> for off, ent in enumerate(["a", "b", "a", "a"]):
...     o.note(("t", 0), ent, off, ts=float(off))
>>> o.position(("t", 0), next_offset=4)   # a needs offsets 2, 3; b needs 1
1
>>> o.note(("t", 0), "a", 4, ts=100.0)   # b has been silent for 99 s > 60 s
>>> o.position(("t", 0), next_offset=5)
3
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Hashable


class PartitionOffsets:
    def __init__(self, keep: int, horizon: float = 3600.0) -> None:
        self.keep = max(keep, 0)
        self.horizon = horizon
        # tp -> entity -> (offsets still needed, last event time)
        self._need: dict[Hashable, dict[str, tuple[deque[int], list[float]]]] = {}
        self._latest: dict[Hashable, float] = {}

    def note(self, tp: Hashable, entity: str, offset: int, ts: float) -> None:
        ents = self._need.setdefault(tp, {})
        e = ents.get(entity)
        if e is None:
            e = ents[entity] = (deque(maxlen=self.keep), [ts])
        if self.keep:
            e[0].append(offset)
        e[1][0] = ts
        if ts > self._latest.get(tp, float("-inf")):
            self._latest[tp] = ts

    def position(self, tp: Hashable, next_offset: int) -> int:
        """The offset to commit for ``tp`` (at most ``next_offset``)."""
        ents = self._need.get(tp)
        if not ents:
            return next_offset
        cutoff = self._latest.get(tp, float("-inf")) - self.horizon
        stale = [ent for ent, (_, t) in ents.items() if t[0] < cutoff]
        for ent in stale:
            del ents[ent]
        oldest = min((d[0] for d, _ in ents.values() if d), default=next_offset)
        return min(oldest, next_offset)

    def entities(self, tp: Hashable) -> list[str]:
        return list(self._need.get(tp, {}))

    def drop(self, tp: Hashable) -> list[str]:
        """Forget a partition (revoked); return its entities."""
        self._latest.pop(tp, None)
        return list(self._need.pop(tp, {}))


def encode_metadata(scored_to: int, lineage: str | None = None) -> str:
    """The commit metadata: how far scoring got and, with a checkpoint, its lineage.

    >>> encode_metadata(42, "ab12")
    '{"scored_to":42,"ck":"ab12"}'
    >>> decode_metadata(encode_metadata(42))["scored_to"], decode_metadata("not json")
    (42, {})
    """
    d: dict[str, Any] = {"scored_to": scored_to}
    if lineage is not None:
        d["ck"] = lineage
    return json.dumps(d, separators=(",", ":"))


def decode_metadata(text: str | None) -> dict[str, Any]:
    try:
        d = json.loads(text or "{}")
        return d if isinstance(d, dict) else {}
    except ValueError:
        return {}
