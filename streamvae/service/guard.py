"""The dead-letter guard: a feed whose records are mostly refused is an incident, not noise.

One bad record is a dead letter. When more than ``share`` of the last ``window`` records
are refused, something upstream changed (a new schema, a broken producer, a wrong
topic): the daemon says so loudly, once per episode (an error in the log, the
``input_rejected`` gauge, and an alert of kind ``input_rejected`` on the alerts topic),
and goes on: every refused record still goes to the dead-letter topic. The episode ends
when the share falls to half the limit (no flapping around it).

Examples
--------
>>> g = RejectionGuard(window=100, share=0.5)
>>> g.observe(60, ["not_json"] * 10)  # fewer than 100 records seen: no judgement yet
>>> g.observe(60, ["not_json"] * 55), round(g.refused_share(), 2)  # 65 of the last 120
('open', 0.54)
>>> g.observe(100, ["not_json"] * 60), g.observe(100, [])  # still on; then none of the last 100
(None, 'close')
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Sequence


class RejectionGuard:
    """Judges the refused share over about the last ``window`` records (whole batches:
    the newest batches that hold at least ``window`` records)."""

    def __init__(self, window: int, share: float) -> None:
        self.window = window
        self.share = share
        self.on_ = False
        self.episodes_ = 0
        self._batches: deque[tuple[int, Counter[str]]] = deque()
        self._records = 0
        self._reasons: Counter[str] = Counter()

    def observe(self, records: int, refused: Sequence[str]) -> str | None:
        """One batch: its record count and the reasons of its refused records; ``"open"``
        when an episode begins with it, ``"close"`` when one ends, else None."""
        why = Counter(refused)
        self._batches.append((records, why))
        self._records += records
        self._reasons += why
        while len(self._batches) > 1 and self._records - self._batches[0][0] >= self.window:
            n, old = self._batches.popleft()
            self._records -= n
            self._reasons -= old
        if self._records < self.window:
            return None
        share = self.refused_share()
        if not self.on_ and share > self.share:
            self.on_ = True
            self.episodes_ += 1
            return "open"
        if self.on_ and share <= self.share / 2:
            self.on_ = False
            return "close"
        return None

    def refused_share(self) -> float:
        return sum(self._reasons.values()) / self._records if self._records else 0.0

    def reasons(self, top: int = 5) -> dict[str, int]:
        """The commonest reasons in the window."""
        return dict(self._reasons.most_common(top))

    @property
    def records(self) -> int:
        return self._records
