"""Lifecycle state as arrays: a restored lifecycle continues exactly like one that never
stopped (buffers, windows waiting out the margin, fleet detector, bank, trigger and its
drift detector), and the state loads from ``.npz`` without pickle."""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np
import pytest

from streamvae.config import RetrainConfig
from streamvae.core.episodes import Alert
from streamvae.core.pipeline import BatchResult, ScoredWindow
from streamvae.core.windows import Window
from streamvae.lifecycle.loop import Lifecycle
from streamvae.lifecycle.state import State

W, F = 4, 2
FLEET = ["a", "b", "c", "d"]


def _alert(kind: str, entity: str, t: float) -> Alert:
    return Alert(f"{kind}-{entity}-{t}", kind, entity, t - W + 1, t, 9.0, 2.0, "v1", (), f"ep-{entity}-{t}", t, 9.0)


def batches(seed: int = 0) -> Iterator[BatchResult]:
    """A fleet of four: quiet, one entity's fault, a fleet-wide shift, quiet again;
    scores rise after the shift (what the drift detector watches)."""
    rng = np.random.default_rng(seed)
    t = 0.0
    open_: set[str] = set()
    for k in range(240):
        scored, normal, alerts = [], [], []
        fleet = 120 <= k < 150
        for _ in range(5):
            t += 1.0
            for e in FLEET:
                flagged = fleet or (e == "b" and 60 <= k < 70)
                if flagged and e not in open_:
                    open_.add(e)
                    alerts.append(_alert("open", e, t))
                elif not flagged and e in open_:
                    open_.discard(e)
                    alerts.append(_alert("close", e, t))
                s = float(rng.gumbel(100.0 + (6.0 if k >= 150 else 0.0), 5.0))
                scored.append(ScoredWindow(e, t - W + 1, t, int(t), s, 120.0, flagged, None))
                if not flagged and e not in open_:
                    normal.append(Window(e, t - W + 1, t, int(t), np.full((W, F), t + rng.random(), np.float32)))
        values = np.stack([np.full((W, F), s.end_ts, np.float32) for s in scored])
        yield BatchResult(scored=scored, alerts=alerts, normal=normal, windows=values)


def _npz(state: State) -> State:
    buf = io.BytesIO()
    np.savez(buf, **state)  # type: ignore[arg-type]
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _view(lc: Lifecycle) -> dict[str, Any]:
    t = lc.trigger
    assert t is not None and t.detector_ is not None
    d = t.detector_
    r = d.detector_
    river = r.estimation if d.kind == "adwin" else (r._sum_increase, r._min_increase, r._x_mean.get())
    return {"buffer": lc.buffer.snapshot(), "bank": lc.bank.snapshot(), "counts": lc.buffer.counts_,
            "pending": lc.buffer.pending(), "fleet": (lc.buffer.fleet_.history(), lc.buffer.fleet_.on_),
            "choice": lc.buffer.choice_, "trigger": (t.new_windows_, t.fleet_windows_, t.last_start_, t.running_),
            "drift": (d.center_, d.scale_, d.n_, d.detected_, river),
            "recent": lc.recalibration_windows(), "offered": lc.buffer.store_.offered()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, tuple) and x and isinstance(x[0], np.ndarray):
            for u, v in zip(x, y, strict=True):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=k)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=k)
        else:
            assert x == y or (x != x and y != y), (k, x, y)


@pytest.mark.parametrize("drift", ["adwin", "page_hinkley"])
def test_a_restored_lifecycle_continues_exactly(drift: str) -> None:
    # a small reservoir, so that it evicts (its RNG and slot order matter), and a margin
    # that leaves windows waiting at the cut
    rcfg = RetrainConfig(max_windows=100, max_anomalies=30, sample_every=2, margin=8.0, min_windows=50,
                         drift=drift, after_windows=0, min_interval=0.0)
    whole, first = Lifecycle(rcfg, W, F), Lifecycle(rcfg, W, F)
    feed = list(batches())
    cut = 153  # just after a fleet-wide shift, with windows pending and the drift detector warmed up
    for res in feed[:cut]:
        whole.observe(res)
        first.observe(res)
    assert whole.buffer.fleet_.ends_ == [751.0] and whole.buffer.pending() > 0 and len(whole.buffer) == 100
    assert whole.trigger is not None and whole.trigger.detector_ is not None
    assert whole.trigger.detector_.center_ is not None  # past its warm-up
    assert whole.due(float(cut * 5)) is not None
    whole.started(cut * 5.0)
    first.started(cut * 5.0)
    whole.finished(cut * 5.0, ok=False)
    first.finished(cut * 5.0, ok=False)
    state = _npz(first.state())
    assert all(v.dtype != object for v in state.values())
    restored = Lifecycle(rcfg, W, F)
    restored.restore(state)
    _same(_view(whole), _view(restored))
    reasons = []
    for k, res in enumerate(feed[cut:], start=cut):
        whole.observe(res)
        restored.observe(res)
        reasons.append((whole.due(k * 5.0), restored.due(k * 5.0)))
    _same(_view(whole), _view(restored))
    assert all(a == b for a, b in reasons)
    assert any(a is not None and a.startswith("drift") for a, _ in reasons), reasons[-3:]


def test_a_retrain_running_at_the_checkpoint_counts_as_failed_after_a_restart() -> None:
    rcfg = RetrainConfig(drift="none", after_windows=1, min_interval=0.0, min_windows=50)
    lc = Lifecycle(rcfg, W, F)
    lc.started(10.0)
    back = Lifecycle(rcfg, W, F)
    back.restore(_npz(lc.state()))
    assert back.trigger is not None and not back.trigger.running_ and back.trigger.failures_ == 1
    assert back.attempts_ == 1 and back.started(20.0) == 0 and back.attempts_ == 2


def test_a_drift_state_of_another_kind_or_damaged_restarts_the_detector() -> None:
    from streamvae.lifecycle.trigger import ScoreDrift

    adwin = ScoreDrift("adwin", warmup=20)
    for s in np.random.default_rng(0).normal(100.0, 5.0, 200):
        adwin.update(float(s))
    state = adwin.state()
    ph = ScoreDrift("page_hinkley", warmup=20)
    ph.restore(state)  # another kind: afresh
    assert ph.center_ is None and ph.n_ == 0
    damaged = dict(state, river=np.frombuffer(b"not adwin", dtype=np.uint8))
    back = ScoreDrift("adwin", warmup=20)
    back.restore(damaged)  # the reference survives, river's window restarts
    assert back.center_ == adwin.center_ and back.n_ == adwin.n_ and back.detector_.width == 0
