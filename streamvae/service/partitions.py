"""Per partition: how far its records are learned, observed and emitted, and where to read.

When a partition is first seen (at start or after an assignment) :meth:`Partitions.resume`
decides where its records are read from and sets its :class:`Marks` from the committed
offset (its metadata says how far scoring got and which checkpoint lineage committed
it) and from the daemon's checkpoint: the checkpoint's positions count only when the
last commit was made by the same lineage (or there is none), since otherwise another
process has learned that partition's records since. See streamvae/service/checkpoint.py.
"""

from __future__ import annotations

import logging
from typing import Any

from streamvae.kafka.offsets import decode_metadata
from streamvae.service.batch import Marks
from streamvae.service.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def key(tp: Any) -> tuple[str, int]:
    """A partition as the checkpoint names it."""
    return (str(tp.topic), int(tp.partition))


class Partitions:
    """The marks and positions of the partitions this process reads (see the module doc).

    ``marks``: per partition; ``start``: (read from, learned to) when it was resumed;
    ``next_offset``: after its last delivered batch; ``fresh``: assigned, not yet resumed;
    ``stashed``: revoked, kept in memory until the assignment says whether it comes back.
    """

    def __init__(self) -> None:
        self.marks: dict[Any, Marks] = {}
        self.start: dict[Any, tuple[int, int]] = {}
        self.next_offset: dict[Any, int] = {}
        self.fresh: set[Any] = set()
        self.stashed: set[Any] = set()

    def resume(self, tp: Any, committed: Any, first: int, ck: Checkpoint | None) -> int:
        """Set ``tp``'s marks; return the offset to read it from. ``committed``: its
        OffsetAndMetadata (None: never committed); ``first``: the offset the consumer
        gave first; ``ck``: the checkpoint the state was restored from (None: none)."""
        self.fresh.discard(tp)
        meta = decode_metadata(committed.metadata) if committed is not None else {}
        scored = int(meta.get("scored_to", committed.offset)) if committed is not None else -1
        read_from = committed.offset if committed is not None else first
        saved = ck.positions.get(key(tp)) if ck is not None else None
        if ck is not None and saved is not None and (committed is None or meta.get("ck") == ck.lineage):
            pos, learned = saved
            marks = Marks(learned, learned, max(scored, learned))
            # a checkpoint at or after the commit holds all of it: read from its position
            read_from = pos if learned >= scored else min(read_from, pos)
        else:
            marks = Marks(scored, scored, scored)
        self.marks[tp] = marks
        self.start[tp] = (read_from, marks.learned_to)
        log.info("%s-%d: reading from %d, learned up to %d, emitted up to %d", tp.topic, tp.partition, read_from,
                 marks.learned_to, marks.emitted_to,
                 extra={"topic": tp.topic, "partition": tp.partition, "offset": read_from})
        return read_from

    def delivered(self, positions: dict[Any, tuple[int, int]]) -> None:
        """A batch is delivered: each partition's records up to its ``scored_to`` are
        learned, observed and emitted."""
        for tp, (_, nxt) in positions.items():
            old = self.marks.get(tp, Marks())
            learned = max(old.learned_to, nxt)  # (a batch that only rebuilt windows ends before it)
            self.marks[tp] = Marks(learned, max(old.observed_to, nxt), max(old.emitted_to, nxt))
            self.next_offset[tp] = nxt

    def rolled_back(self, tp: Any, to: tuple[int, int]) -> int:
        """The state went back to a checkpoint in which ``tp`` was at ``to`` = (read
        from, learned to); what was delivered since stays emitted and observed. Returns
        where to read from."""
        old = self.marks.get(tp, Marks())
        self.marks[tp] = Marks(to[1], old.observed_to, old.emitted_to)
        self.next_offset.pop(tp, None)
        return to[0]

    def checkpoint_positions(self, position: Any) -> dict[tuple[str, int], tuple[int, int]]:
        """Per partition (read from, scored to) for a checkpoint taken now; ``position(tp,
        next_offset)``: the commit position of the windows still open."""
        out = {}
        for tp in self.marks:
            nxt = self.next_offset.get(tp)
            out[key(tp)] = (position(tp, nxt), self.marks[tp].learned_to) if nxt is not None else self.start[tp]
        return out

    def forget(self, tp: Any) -> None:
        for d in (self.marks, self.start, self.next_offset):
            d.pop(tp, None)
