"""NormalBuffer, FleetShift and AnomalyBank: stratified, bounded, margin around episodes, state as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamvae.lifecycle.bank import AnomalyBank
from streamvae.lifecycle.normal import FLEET_SAMPLE_EVERY, NormalBuffer
from streamvae.lifecycle.reservoir import StratifiedReservoir
from streamvae.core.episodes import Alert
from streamvae.core.pipeline import BatchResult, ScoredWindow
from streamvae.core.windows import Window
from streamvae.errors import DataError

W, F = 4, 2


def win(entity: str, t: float, value: float = 0.0) -> Window:
    return Window(entity, t - W + 1, t, int(t), np.full((W, F), value, np.float32))


def scored(entity: str, t: float, flagged: bool = False) -> ScoredWindow:
    return ScoredWindow(entity, t - W + 1, t, int(t), 1.0, 2.0, flagged, np.zeros(F, np.float32))


def alert(kind: str, entity: str, t: float, reason: str = "score") -> Alert:
    return Alert(f"{kind}-{t}", kind, entity, t - W + 1, t, 5.0, 2.0, "v1", (), f"ep-{entity}", t, 5.0, reason)


def normal_batch(entity: str, times: range, alerts: list[Alert] | None = None) -> BatchResult:
    """Every window normal, plus the given alerts (as the pipeline would report them)."""
    return BatchResult(scored=[scored(entity, t) for t in times], alerts=alerts or [],
                       normal=[win(entity, t, float(t)) for t in times])


def test_a_chatty_entity_does_not_crowd_out_the_others() -> None:
    buf = NormalBuffer(max_windows=100, window=W, n_features=F, sample_every=1, margin=0.0)
    for t in range(5000):
        buf.add("chatty", float(t), np.zeros((W, F)))
        if t % 100 == 0:
            for q in ("q1", "q2", "q3"):
                buf.add(q, float(t), np.ones((W, F)))
    counts = buf.per_entity()
    assert len(buf) == 100
    assert counts["q1"] == counts["q2"] == counts["q3"] == 25  # 50 offered each: the fair share is 25
    assert counts["chatty"] == 25
    assert buf.counts_.evicted > 0


def test_quiet_entities_keep_everything_they_offered() -> None:
    buf = NormalBuffer(max_windows=100, window=W, n_features=F, sample_every=1, margin=0.0)
    for t in range(3000):
        buf.add("chatty", float(t), np.zeros((W, F)))
        if t % 300 == 0:
            buf.add("rare", float(t), np.ones((W, F)))
    assert buf.per_entity() == {"chatty": 90, "rare": 10}


def test_reservoir_keeps_old_and_recent_windows() -> None:
    store = StratifiedReservoir(200, W, F, seed=1)
    for t in range(20_000):
        store.add("e", float(t), np.zeros((W, F)))
    _, _, ts = store.snapshot()
    assert len(ts) == 200 and np.all(np.diff(ts) >= 0)
    # a uniform sample of the whole stream: every quarter is represented, none dominates
    quarters = np.histogram(ts, bins=4, range=(0, 20_000))[0]
    assert quarters.min() >= 30 and quarters.max() <= 70, quarters


def test_sampling_one_in_n_per_entity() -> None:
    buf = NormalBuffer(max_windows=1000, window=W, n_features=F, sample_every=10, margin=0.0)
    buf.observe(normal_batch("a", range(100)))
    buf.observe(normal_batch("b", range(30)))
    assert buf.per_entity() == {"a": 10, "b": 3}
    assert buf.counts_.seen == 130 and buf.counts_.sampled == 13


def test_margin_before_an_episode_holds_back_then_drops() -> None:
    buf = NormalBuffer(max_windows=1000, window=W, n_features=F, sample_every=1, margin=50.0)
    buf.observe(normal_batch("a", range(0, 100)))
    # windows wait until 50 s of stream time have passed: ends 0..49 released at t=99
    _, _, ts = buf.snapshot()
    assert ts.max() == 49 and buf.pending() == 50
    # an episode opens at t=120: the windows that ended at 70..99 were within 50 s before it
    buf.observe(BatchResult(scored=[scored("a", 120.0, True)], alerts=[alert("open", "a", 120.0)]))
    _, _, ts = buf.snapshot()
    assert ts.max() == 69, ts.max()  # 50..69 released (older than 120 - 50), 70..99 dropped
    assert buf.counts_.dropped_near_episode == 30 and buf.pending() == 0


def test_margin_after_an_episode_closes() -> None:
    buf = NormalBuffer(max_windows=1000, window=W, n_features=F, sample_every=1, margin=50.0)
    buf.observe(BatchResult(scored=[scored("a", 200.0)], alerts=[alert("close", "a", 200.0)], normal=[win("a", 200.0)]))
    buf.observe(normal_batch("a", range(201, 400)))
    _, _, ts = buf.snapshot()
    assert ts.min() == 250  # nothing from the 50 s after the close
    assert buf.counts_.dropped_near_episode == 50  # 200..249
    # another entity is not affected
    buf.observe(normal_batch("b", range(201, 300)))
    assert min(t for t, e in zip(buf.snapshot()[2], buf.snapshot()[1]) if e == "b") == 201


def test_memory_and_disk_are_bounded(tmp_path: Path) -> None:
    buf = NormalBuffer(max_windows=200, window=W, n_features=F, sample_every=1, margin=0.0)
    nbytes = buf.store_._values.nbytes
    assert nbytes == 200 * W * F * 4
    for t in range(5000):
        buf.add(f"e{t % 7}", float(t), np.random.default_rng(t).normal(size=(W, F)))
    assert buf.store_._values.nbytes == nbytes and len(buf) == 200
    path = buf.save(tmp_path / "normal.npz")
    # windows + per-window entity/ts + per-entity counters: never grows with what was offered
    assert path.stat().st_size < 200 * W * F * 4 + 200 * 64 + 4096


def test_save_load_round_trip(tmp_path: Path) -> None:
    buf = NormalBuffer(max_windows=50, window=W, n_features=F, sample_every=1, margin=0.0)
    for t in range(300):
        v = np.full((W, F), float(t), np.float32)
        v[0, 0] = np.nan
        buf.add("ab"[t % 2], float(t), v)
    path = buf.save(tmp_path / "b.npz")
    with np.load(path, allow_pickle=False) as z:  # nothing in it needs pickle
        assert z["store.values"].dtype == np.float32
    back = NormalBuffer(max_windows=50, window=W, n_features=F).load(path)
    for got, want in zip(back.snapshot(), buf.snapshot()):
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want
    assert back.counts_.seen == buf.counts_.seen and back.store_.offered() == buf.store_.offered()
    with pytest.raises(DataError, match="shape"):
        NormalBuffer(max_windows=50, window=W + 1, n_features=F).load(path)
    with pytest.raises(DataError, match="not a streamvae anomaly file"):
        AnomalyBank(10, W, F).load(path)


def test_anomaly_bank_keeps_only_windows_of_episodes_that_opened() -> None:
    bank = AnomalyBank(100, W, F)
    # a lone flagged window (no episode) and then a 3-window streak that opens an episode
    res = BatchResult(
        scored=[scored("a", 1.0, True), scored("a", 2.0), scored("a", 3.0, True), scored("a", 4.0, True),
                scored("a", 5.0, True), scored("a", 6.0, True), scored("a", 7.0)],
        alerts=[alert("open", "a", 5.0), alert("close", "a", 7.0)],
    )
    values = np.stack([np.full((W, F), t, np.float32) for t in range(1, 8)])
    bank.observe(res, values)
    x, eps, ts = bank.snapshot()
    assert ts.tolist() == [3.0, 4.0, 5.0, 6.0] and set(eps) == {"ep-a"}
    # an episode opened by a sensor rule is not a model anomaly
    rule = BatchResult(scored=[scored("b", 10.0, True)], alerts=[alert("open", "b", 10.0, reason="dead_sensor")])
    bank.observe(rule, values[:1])
    assert len(bank) == 4
    with pytest.raises(DataError):
        bank.observe(res, values[:2])


def fleet_batch(entities: list[str], times: range, flagged: bool, alerts: list[Alert] | None = None) -> BatchResult:
    """Every entity's windows at ``times``, as the pipeline reports them (values = end time)."""
    sc = [scored(e, t, flagged) for t in times for e in entities]
    vals = np.stack([np.full((W, F), s.end_ts, np.float32) for s in sc])
    normal = [] if flagged else [win(s.entity, s.end_ts, s.end_ts) for s in sc]
    return BatchResult(scored=sc, alerts=alerts or [], normal=normal, windows=vals)


def test_fleet_shift_learns_the_plant_as_it_is_now_even_when_a_swap_interrupts_the_move(tmp_path: Path) -> None:
    def learnt(buf: NormalBuffer, min_windows: int, span: float = 0.0) -> tuple[np.ndarray, list[str]]:
        """What the retrain job learns: the saved buffer, loaded with retrain.shift_span = ``span``."""
        path = buf.save(tmp_path / "learnt.npz")
        return NormalBuffer(10_000, W, F, sample_every=10, shift_span=span).load(path).training_windows(min_windows)

    fleet = ["a", "b", "c", "d"]
    buf = NormalBuffer(max_windows=10_000, window=W, n_features=F, sample_every=10, margin=10.0, fleet_min=4)
    buf.observe(fleet_batch(fleet, range(0, 100), flagged=False))  # the old operating point
    old = len(buf)
    assert old > 0 and not buf.fleet_shift_on
    # the whole fleet alarms at once: a new operating point; flagged windows are sampled too
    buf.observe(fleet_batch(fleet, range(100, 160), flagged=True, alerts=[alert("open", e, 100.0) for e in fleet]))
    assert buf.fleet_shift_on and buf.fleet_.starts_ == [100.0] and np.isnan(buf.fleet_.ends_[0])
    since_first = len(buf) - old
    assert since_first >= 4 * (60 // FLEET_SAMPLE_EVERY - 1) > 4 * 60 // 10  # more than 1 in sample_every
    # a swap closes every episode; minutes later the still-moving plant alarms again
    buf.observe(fleet_batch(fleet, range(160, 170), flagged=False, alerts=[alert("close", e, 160.0) for e in fleet]))
    assert not buf.fleet_shift_on and buf.fleet_.ends_ == [160.0]
    buf.observe(fleet_batch(fleet, range(170, 180), flagged=True, alerts=[alert("open", e, 170.0) for e in fleet]))
    assert buf.fleet_.starts_ == [100.0, 170.0] and buf.fleet_.ends_[0] == 160.0 and np.isnan(buf.fleet_.ends_[1])
    _, _, ts = buf.snapshot()
    # mid-move: the newest 30 s of it, whichever shift they were sampled in; never the old point
    x, ents = learnt(buf, min_windows=10, span=30.0)
    cut = ts[-1] - 30.0
    assert len(ents) == len(x) and len(x) == int((ts >= cut).sum())
    assert x[:, 0, 0].min() >= cut and x[:, 0, 0].max() == ts[-1]
    # the plant settles (the next model fits it): every settled window is learnt, the move no more
    buf.observe(fleet_batch(fleet, range(180, 190), flagged=False, alerts=[alert("close", e, 180.0) for e in fleet]))
    assert buf.fleet_.ends_ == [160.0, 180.0]
    buf.observe(fleet_batch(fleet, range(190, 400), flagged=False))
    _, _, ts = buf.snapshot()
    assert ((ts >= 180) & (ts < 190)).any()  # the fleet's episodes closing are no faults: no margin after them
    # ... and for span() seconds after the shift ended it is sampled as densely as the move was
    settled = np.diff(np.flatnonzero(np.isin(np.arange(190, 400), ts[ts >= 190])))
    span = buf.span()
    assert span == pytest.approx(1000 * 10 / 4, rel=0.01) and span > 220  # min_windows 1000 by default: all of 180-400
    assert set(settled.tolist()) == {FLEET_SAMPLE_EVERY}
    x, _ = learnt(buf, min_windows=10, span=30.0)
    assert x[:, 0, 0].min() > 180 and len(x) == int((ts > 180).sum()) > 10  # the shift ended at 180
    # too few chosen: the newest min_windows since the first shift, then everything
    n_new = int((ts >= 100).sum())
    x, _ = learnt(buf, min_windows=n_new - 1, span=30.0)
    assert len(x) == n_new - 1 and x[:, 0, 0].min() >= 100
    x, _ = learnt(buf, min_windows=len(buf) - old + 1 + 10_000, span=30.0)
    assert len(x) == len(buf)
    # span 0: the stream time in which the fleet (4 windows a second) offers min_windows to 1-in-10 sampling
    assert buf.span(12) == pytest.approx(12 * 10 / 4, rel=0.01)
    np.testing.assert_array_equal(buf.training_windows(12)[0], learnt(buf, 12, span=buf.span(12))[0])
    back = NormalBuffer(max_windows=10_000, window=W, n_features=F).load(buf.save(tmp_path / "n.npz"))
    assert back.fleet_.starts_ == [100.0, 170.0] and back.fleet_.ends_ == [160.0, 180.0]  # the retrain job reads the file
    np.testing.assert_array_equal(back.training_windows(12)[0], buf.training_windows(12)[0])


def _stream(seed: int = 3) -> list[tuple[ScoredWindow, Window | None, list[Alert]]]:
    """Eight entities, 400 s: most of the fleet alarms from 150 s to 260 s (a shift), one
    entity has a fault of its own at 320 s, and the buffer is small enough to evict."""
    rng = np.random.default_rng(seed)
    ents = [f"e{i}" for i in range(8)]
    out: list[tuple[ScoredWindow, Window | None, list[Alert]]] = []
    open_: set[str] = set()
    for t in range(400):
        for e in rng.permutation(ents).tolist():
            fault = (150 <= t < 260 and e != "e7") or (e == "e3" and 320 <= t < 340)
            alerts = []
            if fault and e not in open_:
                open_.add(e)
                alerts.append(alert("open", e, float(t)))
            elif not fault and e in open_:
                open_.discard(e)
                alerts.append(alert("close", e, float(t)))
            normal = None if fault or e in open_ else win(e, float(t), float(rng.normal()))
            out.append((scored(e, float(t), flagged=fault), normal, alerts))
    return out


def _batches(stream: list[tuple[ScoredWindow, Window | None, list[Alert]]], size: int) -> list[BatchResult]:
    out = []
    for lo in range(0, len(stream), size):
        part = stream[lo : lo + size]
        out.append(BatchResult(scored=[s for s, _, _ in part], alerts=[a for _, _, al in part for a in al],
                               normal=[w for _, w, _ in part if w is not None],
                               windows=np.stack([np.full((W, F), s.end_ts, np.float32) for s, _, _ in part])))
    return out


def test_the_buffer_ends_the_same_however_the_stream_is_cut_into_batches() -> None:
    # a daemon reads a stretch again after a restart in other polls: it must learn it as it did
    stream = _stream()
    states = []
    for sizes in (7, 64, 501):
        buf = NormalBuffer(max_windows=300, window=W, n_features=F, sample_every=3, margin=20.0, fleet_min=4)
        for b in _batches(stream, sizes):
            buf.observe(b)
        states.append(buf.state())
        assert buf.fleet_.starts_ and buf.counts_.fleet_shift > 0 and buf.counts_.evicted > 0
    for other in states[1:]:
        assert set(other) == set(states[0])
        for k, v in states[0].items():
            assert np.array_equal(other[k], v), k
