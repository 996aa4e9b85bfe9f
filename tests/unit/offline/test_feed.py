"""The synthetic plant feed: deterministic, labelled, and each anomaly does what its label says.

Most checks compare a feed with anomalies against the same seed without them: the normal
data do not depend on the anomalies, so the difference is exactly what was injected.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamvae.errors import ConfigError
from streamvae.offline.csvio import read_table
from streamvae.offline.feed import (
    DRIFT_STD,
    FEATURES,
    KINDS,
    SHIFT_STD,
    SPIKE_STD,
    SensorFeed,
    parse_anomalies,
    write_csv,
    write_training_csvs,
)

F = {n: i for i, n in enumerate(FEATURES)}
KW = dict(entities=4, rate=4.0, duration=3600.0, seed=5)  # one reading per entity per second


def _pair(spec: str, **kw: object) -> tuple[SensorFeed, np.ndarray, np.ndarray, np.ndarray]:
    """(feed with ``spec``, its ts (N, T), its values, the clean values of the same seed)."""
    args = {**KW, **kw}
    feed = SensorFeed(anomalies=spec, **args)  # type: ignore[arg-type]
    ts, x = feed.arrays()
    _, clean = SensorFeed(**args).arrays()  # type: ignore[arg-type]
    return feed, ts, x, clean


def _span(feed: SensorFeed, ts: np.ndarray, ep: object) -> tuple[int, np.ndarray]:
    e = feed.entity_ids.index(ep.entity)  # type: ignore[attr-defined]
    return e, (ts[e] >= ep.start_ts) & (ts[e] <= ep.end_ts)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def every_kind() -> tuple[SensorFeed, np.ndarray, np.ndarray, np.ndarray]:
    return _pair("all:2")


def test_same_seed_same_feed_other_seed_other_feed() -> None:
    a = list(SensorFeed(entities=3, rate=6.0, duration=600, anomalies="all,duration=30", seed=3).records())
    b = list(SensorFeed(entities=3, rate=6.0, duration=600, anomalies="all,duration=30", seed=3).records())
    c = list(SensorFeed(entities=3, rate=6.0, duration=600, anomalies="all,duration=30", seed=4).records())
    assert a == b
    assert a != c
    t1 = SensorFeed(entities=3, rate=6.0, duration=600, anomalies="all,duration=30", seed=3).truth()
    assert t1 == SensorFeed(entities=3, rate=6.0, duration=600, anomalies="all,duration=30", seed=3).truth()


def test_records_are_input_records_in_time_order() -> None:
    feed = SensorFeed(entities=3, rate=6.0, duration=200, anomalies="dead,spike", seed=1)
    recs = list(feed.records())
    assert len(recs) == feed.n_records == 3 * 400  # 6 readings/s over 3 entities: one every 0.5 s each
    ts = [r["ts"] for r in recs]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[0] == feed.start_ts and ts[-1] == feed.end_ts
    assert {r["entity"] for r in recs} == set(feed.entity_ids) == {"pump-01", "pump-02", "pump-03"}
    for r in recs:
        assert set(r) == {"entity", "ts", "values"} and list(r["values"]) == list(FEATURES)
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in r["values"].values())
    per_entity = [[r["ts"] for r in recs if r["entity"] == e] for e in feed.entity_ids]
    assert all(np.allclose(np.diff(t), feed.interval) for t in per_entity)  # a fixed rate per entity


def test_every_injected_anomaly_is_in_the_truth_inside_the_feed(every_kind: tuple) -> None:
    feed, ts, _, _ = every_kind
    truth = feed.truth()
    eps = truth["episodes"]
    assert len(eps) == 2 * len(KINDS)
    assert sorted(e["kind"] for e in eps) == sorted(KINDS * 2)
    warmup = truth["anomalies"]["warmup"]
    assert warmup == pytest.approx(0.2 * feed.duration)
    for e in eps:
        assert set(e) >= {"id", "entity", "kind", "features", "start_ts", "end_ts"}
        assert feed.start_ts + warmup <= e["start_ts"] <= e["end_ts"] <= feed.end_ts
        assert e["entity"] in feed.entity_ids and all(f in FEATURES for f in e["features"])
        i = feed.entity_ids.index(e["entity"])
        assert e["start_ts"] in ts[i] and e["end_ts"] in ts[i]  # first and last affected reading
        want = 5.0 if e["kind"] == "spike" else 60.0
        assert e["end_ts"] - e["start_ts"] == pytest.approx(want - feed.interval)
    assert len({e["id"] for e in eps}) == len(eps)
    for ent in feed.entity_ids:  # never two at once on one entity, with the quiet gap between
        mine = sorted((e["start_ts"], e["end_ts"]) for e in eps if e["entity"] == ent)
        assert all(b[0] - a[1] >= 60.0 for a, b in zip(mine, mine[1:]))


def test_outside_the_episodes_the_feed_is_the_normal_feed(every_kind: tuple) -> None:
    feed, ts, x, clean = every_kind
    touched = np.zeros(x.shape, dtype=bool)
    for ep in feed.episodes:
        e, span = _span(feed, ts, ep)
        if ep.kind == "broken_correlation":  # the load surge moves every sensor but the decoupled one
            touched[e, span, :] = True
            touched[e, :, F["temp"]] |= ts[e] >= ep.start_ts  # temp lags the load for minutes
        else:
            touched[e, span, F[ep.features[0]]] = True
    same = np.isclose(np.nan_to_num(x, nan=-1e9), clean)
    assert same[~touched].all()


def test_dead_sends_null_exactly_in_its_range() -> None:
    feed = SensorFeed(anomalies="dead:3", **KW)  # type: ignore[arg-type]
    recs = list(feed.records())
    nulls = {(r["entity"], r["ts"], n) for r in recs for n, v in r["values"].items() if v is None}
    want = set()
    for ep in feed.episodes:
        (name,) = ep.features
        want |= {(ep.entity, r["ts"], name) for r in recs if r["entity"] == ep.entity and ep.start_ts <= r["ts"] <= ep.end_ts}
    assert len(want) == 3 * 60
    assert nulls == want


def test_stuck_repeats_the_last_value() -> None:
    feed = SensorFeed(anomalies="stuck:3", **KW)  # type: ignore[arg-type]
    recs = list(feed.records())
    for ep in feed.episodes:
        (name,) = ep.features
        mine = [r for r in recs if r["entity"] == ep.entity]
        i0 = next(i for i, r in enumerate(mine) if r["ts"] == ep.start_ts)
        i1 = next(i for i, r in enumerate(mine) if r["ts"] == ep.end_ts)
        before = mine[i0 - 1]["values"][name]
        assert {r["values"][name] for r in mine[i0 : i1 + 1]} == {before}
        assert mine[i1 + 1]["values"][name] != before  # and it comes back to life afterwards


def test_level_shift_spike_drift_move_the_value_by_the_stated_amount() -> None:
    feed, ts, x, clean = _pair("level_shift:2,spike:2,drift:2,severity=1.2")
    for ep in feed.episodes:
        e, span = _span(feed, ts, ep)
        f = F[ep.features[0]]
        std = feed.noise_std(ep.entity, ep.features[0])
        delta = (x[e, :, f] - clean[e, :, f])[span]
        base = {"level_shift": SHIFT_STD, "spike": SPIKE_STD, "drift": DRIFT_STD}[ep.kind]
        assert ep.magnitude == pytest.approx(base * 1.2)
        assert ep.direction in (-1, 1)
        if ep.kind == "drift":  # linear, reaching the full offset at the end
            assert delta[-1] == pytest.approx(ep.direction * ep.magnitude * std)
            assert np.all(np.diff(ep.direction * delta) > 0)
        else:
            assert np.allclose(delta, ep.direction * ep.magnitude * std)
        assert np.isfinite(x[e, span, f]).all()
    shift = next(ep for ep in feed.episodes if ep.kind == "level_shift")
    e, span = _span(feed, ts, shift)
    f = F[shift.features[0]]
    moved = x[e, span, f].mean() - clean[e, span, f].mean()
    assert moved == pytest.approx(shift.direction * 6.0 * feed.noise_std(shift.entity, shift.features[0]))


def test_noise_burst_and_broken_correlation() -> None:
    feed, ts, x, clean = _pair("noise_burst:2,broken_correlation:2")
    for ep in feed.episodes:
        e, span = _span(feed, ts, ep)
        if ep.kind == "noise_burst":
            f = F[ep.features[0]]
            extra = (x[e, :, f] - clean[e, :, f])[span].std()
            assert extra / feed.noise_std(ep.entity, ep.features[0]) == pytest.approx(math.sqrt(6.0**2 - 1), rel=0.35)
        else:
            decoupled, driver = ep.features
            assert driver == "rpm" and decoupled in ("flow", "current", "pressure")
            # rpm (and the rest) surge with the load; the decoupled sensor does not follow
            assert np.allclose(x[e, span, F[decoupled]], clean[e, span, F[decoupled]])
            surge = (x[e, :, F["rpm"]] - clean[e, :, F["rpm"]])[span]
            assert np.abs(surge).max() / feed.noise_std(ep.entity, "rpm") > 5
            assert np.sign(surge[len(surge) // 2]) == ep.direction


def test_normal_data_are_finite_and_correlated() -> None:
    feed = SensorFeed(entities=3, rate=3.0, duration=1800, seed=2)
    _, x = feed.arrays()
    assert np.isfinite(x).all()
    for e in range(feed.entities):
        c = np.corrcoef(x[e].T)
        assert c[F["flow"], F["rpm"]] > 0.8
        assert c[F["current"], F["rpm"]] > 0.8
        assert c[F["pressure"], F["rpm"]] > 0.7
        assert c[F["temp"], F["rpm"]] > 0.3  # temp follows the load, with a lag and the ambient cycle
        assert c[F["humidity"], F["temp"]] < 0.3
        # a daily-like cycle: the load repeats with the period
        rpm = x[e, :, F["rpm"]]
        assert np.corrcoef(rpm[:-600], rpm[600:])[0, 1] > 0.5
        assert np.corrcoef(rpm[:-300], rpm[300:])[0, 1] < 0


def test_entities_keep_their_operating_point_across_seeds() -> None:
    a = SensorFeed(entities=3, rate=3.0, duration=1200, seed=1).arrays()[1]
    b = SensorFeed(entities=5, rate=5.0, duration=1200, seed=2).arrays()[1][:3]
    assert np.allclose(a.mean(axis=1), b.mean(axis=1), rtol=0.05)


@pytest.mark.parametrize(
    "spec, says",
    [
        ("spikes:2", "unknown kind 'spikes'"),
        ("spike:0", "count of spike must be an int >= 1"),
        ("spike:two", "count of spike must be an int >= 1"),
        ("spike,,drift", "empty item"),
        ("duration=-5", "duration must be a finite number > 0"),
        ("severity=abc", "severity must be a number"),
        ("severity=50", "severity must be at most 10"),
        ("colour=red", "unknown key 'colour'"),
        ("duration=nan", "duration must be a finite number"),
    ],
)
def test_bad_anomaly_spec_is_a_config_error_naming_it(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_anomalies(spec)
    assert f"anomaly spec {spec!r}" in str(err.value) and says in str(err.value)
    with pytest.raises(ConfigError, match="anomaly spec"):
        SensorFeed(anomalies=spec)


def test_spec_grammar() -> None:
    s = parse_anomalies(" spike:2, all , drift:3, duration=90, spike_duration=4, severity=1.5, warmup=0, gap=30 ")
    counts = dict(s.counts)
    assert counts["spike"] == 3 and counts["drift"] == 4 and counts["dead"] == 1 and s.total == 3 + 4 + 5
    assert (s.duration, s.spike_duration, s.severity, s.warmup, s.gap) == (90.0, 4.0, 1.5, 0.0, 30.0)
    assert parse_anomalies("none").total == parse_anomalies("").total == parse_anomalies(None).total == 0
    assert SensorFeed(anomalies="none", **KW).episodes == []  # type: ignore[arg-type]


def test_too_many_anomalies_for_the_feed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"anomaly spec 'all:20'.*do not fit.*room for"):
        SensorFeed(entities=2, rate=2.0, duration=600, anomalies="all:20")
    with pytest.raises(ConfigError, match="no reading per entity"):
        SensorFeed(entities=10, rate=1.0, duration=5)


def test_training_csvs_read_back_for_train(tmp_path: Path) -> None:
    paths = write_training_csvs(tmp_path / "train", entities=2, seconds=300, interval=1.0, seed=9)
    assert [p.name for p in paths] == ["pump-01.csv", "pump-02.csv"]
    for p in paths:
        t = read_table(p)
        assert t.feature_names == list(FEATURES)
        assert t.values.shape == (300, len(FEATURES)) and np.isfinite(t.values).all()
        assert np.allclose(np.diff(t.ts), 1.0)
    feed = SensorFeed(entities=2, rate=2.0, duration=300, anomalies="dead", seed=1, start_ts=2e9)
    t = read_table(write_csv(tmp_path / "feed.csv", feed), keep=("entity",), features=list(FEATURES))
    assert len(t.values) == feed.n_records and np.isnan(t.values).sum() == 60
    assert set(t.extra["entity"]) == {"pump-01", "pump-02"}


def test_operating_point_shift_moves_every_load_driven_sensor_and_nothing_before_it() -> None:
    kw = dict(entities=3, rate=3.0, duration=2400, seed=5, period=600.0)
    _, base = SensorFeed(**kw).arrays()  # type: ignore[arg-type]
    ts, moved = SensorFeed(shift=0.25, shift_at=900, shift_over=300, **kw).arrays()  # type: ignore[arg-type]
    t = ts - ts[:, :1]
    before = t[0] < 900
    np.testing.assert_array_equal(moved[:, before], base[:, before])  # the same plant until the move
    after = t[0] >= 1200 + 600  # moved, and the temperature lag has caught up
    flow, rpm, hum = (FEATURES.index(f) for f in ("flow", "rpm", "humidity"))
    for f in (flow, rpm):  # flow0 * L, rpm0 * L: the mean load went from 1 to 1.25
        ratio = moved[:, after, f].mean(axis=1) / base[:, after, f].mean(axis=1)
        np.testing.assert_allclose(ratio, 1.25, rtol=0.03)
    np.testing.assert_allclose(moved[:, after, hum].mean(axis=1), base[:, after, hum].mean(axis=1), atol=0.5)  # not load-driven
