"""When the daemon gives memory back (streamvae/service/runtime.py MemoryTrim)."""

from __future__ import annotations

import pytest

from streamvae.core.clock import FakeClock
from streamvae.service import runtime
from streamvae.service.runtime import BIG_BATCH_BYTES, QUIET_TRIM_EVERY_S, TRIM_EVERY_S, MemoryTrim


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(runtime, "give_back_memory", lambda: calls.append(1.0))
    return calls


def test_a_burst_is_given_back_soon_after_the_feed_goes_quiet(trims: list[float]) -> None:
    clock = FakeClock()
    trim = MemoryTrim(clock)
    clock.advance(TRIM_EVERY_S)
    trim.after_batch(BIG_BATCH_BYTES + 1)  # a huge poll: given back at once
    assert len(trims) == 1
    clock.advance(QUIET_TRIM_EVERY_S)
    trim.after_batch(100)  # the rest of the drain
    trim.quiet()  # the feed goes quiet well within TRIM_EVERY_S of the last trim
    assert len(trims) == 2
    trim.quiet()  # nothing ran since: nothing to give back
    clock.advance(TRIM_EVERY_S)
    trim.quiet()
    assert len(trims) == 2


def test_big_batches_give_back_at_most_every_trim_every_s(trims: list[float]) -> None:
    clock = FakeClock()
    trim = MemoryTrim(clock)
    for _ in range(5):
        clock.advance(TRIM_EVERY_S / 4)
        trim.after_batch(BIG_BATCH_BYTES + 1)
    assert len(trims) == 1  # at t = 10 s; the others fell within 10 s of it
