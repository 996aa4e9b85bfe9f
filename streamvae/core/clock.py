"""Time, passed in: every object whose behaviour depends on time takes a :class:`Clock`.

``time()`` is wall-clock time (epoch seconds: event-time comparisons, schedules written to
disk); ``monotonic()`` is for intervals (how long since the last commit, the last save).
The daemon uses :class:`SystemClock`; tests use :class:`FakeClock` and advance it instead
of sleeping or setting private fields.

>>> c = FakeClock(1000.0)
>>> c.time(), c.monotonic()
(1000.0, 0.0)
>>> c.advance(2.5)
>>> c.time(), c.monotonic()
(1002.5, 2.5)
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...


class SystemClock:
    """The real clocks of this process."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()


class FakeClock:
    """A clock that moves only when told to (``advance``); both readings move together."""

    def __init__(self, start: float = 0.0) -> None:
        self._wall = float(start)
        self._mono = 0.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back; got {seconds!r}")
        self._wall += seconds
        self._mono += seconds


SYSTEM = SystemClock()
