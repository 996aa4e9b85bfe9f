"""Threshold trackers: one conformance suite over every kind, then each kind's own targets.

Scores point up: higher means more anomalous, and a tracker flags a score above its
threshold. Every stream here is seeded, so a rate is a fixed number, not a coin toss.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from streamvae.core.spot import DSPOT, SPOT
from streamvae.core.thresholds import QuantileThreshold
from streamvae.core.trackers import THRESHOLD_KINDS, make_threshold, threshold_from_state
from streamvae.core.bank import ThresholdBank
from streamvae.errors import ConfigError

# Parameters per kind for the conformance suite; every variant of a kind runs every check.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "fixed": [{"value": 9.0}],
    "quantile": [{"q": 0.99}, {"q": 0.99, "window": 500}],
    "spot": [{"q": 1e-3}, {"q": 1e-2, "max_peaks": 50}],
    "dspot": [{"q": 1e-3}, {"q": 1e-2, "depth": 10, "max_peaks": 50}],
}
# One out-of-range value per kind: the ConfigError must name the parameter.
BAD_VALUE = {"fixed": ("value", float("nan")), "quantile": ("q", 1.5), "spot": ("q", 0.5), "dspot": ("depth", 1)}


def _normal(n: int, seed: int) -> np.ndarray:
    """Gamma(4) scores: positive and right-skewed, like a -log-likelihood."""
    return np.random.default_rng(seed).gamma(4.0, size=n)


def _stream(n: int, seed: int) -> list[float]:
    """Normal scores with a spike every 97 scores and a NaN every 211."""
    x = _normal(n, seed)
    x[::97] += 40.0
    x[5::211] = np.nan
    return x.tolist()


def _state(t: Any) -> str:
    return json.dumps(t.to_state(), sort_keys=True, allow_nan=False)


def test_every_kind_has_conformance_parameters() -> None:
    assert set(VARIANTS) == set(THRESHOLD_KINDS) == set(BAD_VALUE)


# --- conformance: every kind ----------------------------------------------------------
@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_not_ready_is_none_never_zero(kind: str) -> None:
    for params in VARIANTS[kind]:
        cold = {k: v for k, v in params.items() if k != "value"}  # fixed: no value yet
        t = make_threshold(kind, **cold)
        assert t.get() is None
        for s in (1e9, 5.0, 0.0):
            d = t.update(s)
            assert d == (None, False)
            assert d[0] is None and d[1] is False
        assert t.get() is None
    # a fixed threshold given its value is ready from the start
    assert make_threshold("fixed", value=9.0).get() == 9.0


@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_warm_start_makes_it_ready(kind: str) -> None:
    for params in VARIANTS[kind]:
        t = make_threshold(kind, **params)
        assert t.warm_start(_normal(5000, seed=1)) is t
        v = t.get()
        assert isinstance(v, float) and np.isfinite(v)
        assert v > 0.0  # Gamma(4) scores are positive; its upper threshold is too
        d = t.update(1e9)
        assert d[1] is True and isinstance(d[0], float)
        assert t.update(0.0)[1] is False


@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_state_is_json_and_continues_with_identical_decisions(kind: str) -> None:
    for params in VARIANTS[kind]:
        t = make_threshold(kind, **params).warm_start(_normal(5000, seed=2))
        for s in _stream(3000, seed=3):
            t.update(s)
        text = _state(t)
        copy = threshold_from_state(json.loads(text))
        assert type(copy) is type(t)
        assert _state(copy) == text
        assert copy.get() == t.get()
        nxt = _stream(1000, seed=4)
        a = [t.update(s) for s in nxt]
        b = [copy.update(s) for s in nxt]
        assert a == b  # every threshold bit for bit, every verdict
        assert sum(flagged for _, flagged in a) >= 10  # the spikes were judged, not only normal scores
        assert _state(copy) == _state(t)


@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_flagged_and_nan_scores_do_not_move_it(kind: str) -> None:
    for params in VARIANTS[kind]:
        t = make_threshold(kind, **params).warm_start(_normal(5000, seed=5))
        for s in _stream(2000, seed=6):
            t.update(s)
        before, thr = _state(t), t.get()
        d = t.update(1e12)
        assert d == (thr, True)
        if kind != "quantile":  # quantile: censored at the threshold (its own test below)
            assert _state(t) == before and t.get() == thr
        before, thr = _state(t), t.get()
        d = t.update(float("nan"))
        assert d == (thr, False)
        assert _state(t) == before and t.get() == thr


@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_unknown_or_bad_parameters_are_config_errors(kind: str) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        make_threshold(kind, bogus=1)
    key, value = BAD_VALUE[kind]
    with pytest.raises(ConfigError, match=rf"threshold\.{key}\b"):
        make_threshold(kind, **{key: value})


# Built in code, a tracker refuses a bad parameter in the words of a config file
# (config.py's rules and message shape): the same line whichever way the value came.
CONSTRUCTOR_REFUSALS = [
    (lambda: QuantileThreshold(q=0.001), 'threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.001'),
    (lambda: QuantileThreshold(q=0.99, window=5), 'threshold.window must be an int >= 10, or unset for kind = "quantile"; got 5'),
    (lambda: SPOT(q=0.5), 'threshold.q must be a number in (0, 0.1) for kind = "spot"; got 0.5'),
    (lambda: SPOT(level=1.0), 'threshold.level must be a number in [0.5, 1) for kind = "spot"; got 1.0'),
    (lambda: SPOT(max_peaks=50, min_peaks=60), 'threshold.min_peaks must be an int in [3, 50] for kind = "spot"; got 60'),
    (lambda: DSPOT(q=0.5), 'threshold.q must be a number in (0, 0.1) for kind = "dspot"; got 0.5'),
    (lambda: DSPOT(depth=1), 'threshold.depth must be an int >= 2 for kind = "dspot"; got 1'),
    (lambda: make_threshold("fixed", value=float("inf")), 'threshold.value must be a finite number, or unset for kind = "fixed"; got inf'),
    (lambda: ThresholdBank("spot", min_history=5), "threshold.min_history must be an int >= 20 (an entity's own "
     "unflagged windows before it gets a tracker of its own); got 5"),
    (lambda: ThresholdBank("spot", max_entities=0), "threshold.max_entities must be an int >= 1; got 0"),
]


@pytest.mark.parametrize("build, message", CONSTRUCTOR_REFUSALS)
def test_a_tracker_built_in_code_refuses_in_the_config_message_shape(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build()
    assert str(e.value) == message


def test_a_quantile_state_saved_with_the_old_censored_count_still_loads() -> None:
    t = QuantileThreshold(q=0.99, window=50).warm_start(_normal(80, seed=60))
    for s in (100.0, 1.0, 200.0):
        t.update(s)
    state = t.to_state()
    assert "cens" not in state and "censored" not in state
    old = {**state, "cens": [0] * len(state["fifo"]), "censored": 2}
    assert _state(threshold_from_state(old)) == _state(t)


def test_unknown_kind_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"threshold\.kind.*'median'"):
        make_threshold("median")
    with pytest.raises(ConfigError, match="'median'"):
        threshold_from_state({"kind": "median"})
    with pytest.raises(ConfigError, match=r"threshold\.kind.*'median'"):
        ThresholdBank("median")


# --- SPOT / DSPOT targets ---------------------------------------------------------------
def _flag_rate(t: Any, scores: np.ndarray) -> float:
    return sum(t.update(s)[1] for s in scores.tolist()) / len(scores)


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda rng, n: rng.pareto(3.0, n), id="pareto-3"),
        pytest.param(lambda rng, n: np.abs(rng.standard_t(3, n)), id="abs-student-t-3"),
    ],
)
def test_spot_flags_its_risk_on_heavy_tails(draw: Any) -> None:
    rng = np.random.default_rng(11)
    t = SPOT(q=1e-3).warm_start(draw(rng, 5000))
    rate = _flag_rate(t, draw(rng, 200_000))
    assert 0.5e-3 <= rate <= 2e-3, f"SPOT(q=1e-3) flagged {rate:.5f} of 200,000 scores"


def test_dspot_follows_a_drifting_level_where_spot_cannot() -> None:
    q, n = 1e-3, 200_000
    rng = np.random.default_rng(12)
    warm = rng.standard_normal(5000)
    drifting = rng.standard_normal(n) + np.linspace(0.0, 5.0, n)  # +5 standard deviations
    dspot_rate = _flag_rate(DSPOT(q=q).warm_start(warm), drifting)
    spot_rate = _flag_rate(SPOT(q=q).warm_start(warm), drifting)
    assert dspot_rate <= 3 * q, f"DSPOT flagged {dspot_rate:.5f} of a drifting normal stream"
    assert spot_rate > 3 * q, f"plain SPOT flagged only {spot_rate:.5f}: the drift test shows nothing"


def test_spot_threshold_sits_in_the_tail_of_the_warm_start() -> None:
    x = np.random.default_rng(13).exponential(size=20_000)
    z = SPOT(q=1e-3).warm_start(x).get()
    assert z is not None
    assert np.log(1e3) * 0.9 < z < np.log(1e3) * 1.1  # exact: -log(1e-3) = 6.91


# --- quantile ---------------------------------------------------------------------------
def test_p_square_quantile_is_within_one_percentile_point() -> None:
    x = np.random.default_rng(14).lognormal(size=100_000)
    t = QuantileThreshold(q=0.99).warm_start(x)  # learns every score, one at a time
    v = t.get()
    assert v is not None
    assert 0.98 <= np.mean(x <= v) <= 1.00
    assert abs(v - np.quantile(x, 0.99)) / np.quantile(x, 0.99) < 0.05


def test_window_quantile_is_exact_over_its_last_window() -> None:
    rng = np.random.default_rng(15)
    t = QuantileThreshold(q=0.99, window=5000).warm_start(rng.lognormal(size=5000))
    x = rng.lognormal(size=100_000)
    seen = []
    for s in x.tolist():
        thr, flagged = t.update(s)
        seen.append(thr if flagged else s)  # a flagged score counts as censored at its threshold
    last = np.asarray(seen[-5000:])  # the window holds the last 5,000 observations
    v = t.get()
    assert v is not None
    assert 0.98 <= np.mean(last <= v) <= 1.00
    assert v == np.sort(last)[int(0.99 * 5000)]


@pytest.mark.parametrize("window", [None, 5000])
def test_quantile_flag_rate_stays_near_its_level_on_a_stationary_stream(window: int | None) -> None:
    # without censoring flagged scores at the threshold, the window tracker ratcheted
    # down to 27% flagged here, and P-square to ~1.6%
    rng = np.random.default_rng(16)
    t = QuantileThreshold(q=0.99, window=window).warm_start(rng.lognormal(size=5000))
    rate = _flag_rate(t, rng.lognormal(size=100_000))
    assert 0.5 * (1 - 0.99) <= rate <= 1.5 * (1 - 0.99), f"flagged {rate:.4f} of a stationary stream at q=0.99"


@pytest.mark.parametrize("window", [None, 5000])
def test_a_long_anomaly_neither_lifts_nor_drags_a_quantile_threshold(window: int | None) -> None:
    rng = np.random.default_rng(17)
    t = QuantileThreshold(q=0.99, window=window).warm_start(rng.lognormal(size=5000))
    for s in rng.lognormal(size=20_000).tolist():
        t.update(s)
    before = t.get()
    assert before is not None
    flags = [t.update(s)[1] for s in (rng.lognormal(size=20_000) + 50.0).tolist()]  # far above: all flagged
    assert all(flags)
    assert t.get() == pytest.approx(before, rel=0.02)


def test_a_flagged_score_is_learned_by_the_fact_not_the_value() -> None:
    """Quantile trackers count a flagged score as censored at the threshold: 1e12 and a
    score just above the threshold leave the same state."""
    rng = np.random.default_rng(18)
    a = QuantileThreshold(q=0.99, window=500).warm_start(rng.lognormal(size=2000))
    b = threshold_from_state(json.loads(_state(a)))
    thr = a.get()
    assert thr is not None
    assert a.update(1e12) == b.update(thr * (1 + 1e-9)) == (thr, True)
    assert _state(a) == _state(b)


# --- ThresholdBank -----------------------------------------------------------------------
def _bank(**kw: Any) -> ThresholdBank:
    params = dict(kind="spot", params={"q": 1e-3}, min_history=50)
    params.update(kw)
    return ThresholdBank(**params).warm_start(_normal(5000, seed=20))  # type: ignore[arg-type]


def test_bank_falls_back_to_global_then_grows_an_own_tracker() -> None:
    bank = _bank()
    glob = SPOT(q=1e-3).warm_start(_normal(5000, seed=20))  # the bank's global, twin
    assert bank.get("pump-1") == bank.get() == glob.get()
    scores = (_normal(49, seed=21) * 0.5).tolist()
    for s in scores:
        assert bank.update("pump-1", s) == glob.update(s)  # judged by the global tracker
        assert bank.get("pump-1") == bank.get()
    assert not bank.has_own("pump-1")
    # a flagged score is no history
    assert bank.update("pump-1", 1e9)[1] and glob.update(1e9)[1]
    assert not bank.has_own("pump-1")
    bank.update("pump-1", 3.0)
    glob.update(3.0)
    assert bank.has_own("pump-1")  # 50 unflagged scores of its own
    own = SPOT(q=1e-3, max_peaks=200).warm_start(np.asarray(scores + [3.0], np.float32))
    assert bank.get("pump-1") == own.get() != bank.get()
    assert bank.get("pump-2") == bank.get() == glob.get()  # a new entity still falls back
    assert len(bank) == 1


def test_bank_keeps_at_most_max_entities_least_recently_seen_out_first() -> None:
    bank = _bank(min_history=20, max_entities=3)
    for e in "abcdefgh":
        bank.update(e, 3.0)
    assert len(bank) == 3 and bank.evicted_ == 5
    # three entities with trackers of their own, then a fourth one comes
    bank = _bank(min_history=20, max_entities=3)
    for e in "abc":
        for s in _normal(20, seed=ord(e)).tolist():
            bank.update(e, s)
        assert bank.has_own(e)
    bank.update("a", 3.0)  # b is now the least recently seen
    for s in _normal(20, seed=30).tolist():
        bank.update("d", s)
    assert bank.has_own("d"), "a new entity must be able to displace the least recently seen one"
    assert not bank.has_own("b") and bank.has_own("a") and bank.has_own("c")
    assert len(bank) == 3 and bank.evicted_ == 1
    assert bank.get("b") == bank.get()  # back to the fallback


def test_bank_recalibrate_forgets_entities_and_rewarms_global() -> None:
    bank = _bank(min_history=20)
    for e in ("a", "b"):
        for s in _normal(25, seed=40).tolist():
            bank.update(e, s)
    bank.update("c", 3.0)
    assert bank.has_own("a") and len(bank) == 3
    new_scores = _normal(5000, seed=41) * 10.0  # a new model: another scale
    bank.recalibrate(new_scores)
    assert len(bank) == 0 and not bank.has_own("a")
    assert bank.get() == SPOT(q=1e-3).warm_start(new_scores).get()
    assert bank.get("a") == bank.get()


def test_bank_state_round_trip_gives_the_same_decisions() -> None:
    bank = _bank(min_history=30, max_entities=4)
    rng = np.random.default_rng(50)
    entities = ["a", "b", "c", "d", "e"]
    for i, s in enumerate(_stream(460, seed=51)):
        bank.update(entities[int(rng.integers(0, 3))] if i < 450 else "d", s)
    assert all(bank.has_own(e) for e in "abc") and not bank.has_own("d") and len(bank) == 4
    text = json.dumps(bank.to_state(), allow_nan=False)
    copy = ThresholdBank.from_state(json.loads(text))
    assert len(copy) == len(bank)
    nxt = _stream(1500, seed=52)
    who = [entities[int(i)] for i in rng.integers(0, 5, size=len(nxt))] + ["f"] * 40
    nxt += _normal(40, seed=53).tolist()
    a = [bank.update(e, s) for e, s in zip(who, nxt)]
    b = [copy.update(e, s) for e, s in zip(who, nxt)]
    assert a == b
    assert json.dumps(copy.to_state()) == json.dumps(bank.to_state())


def test_an_entity_tracker_waits_for_its_history_to_span_min_history_s() -> None:
    bank = ThresholdBank("spot", {"q": 1e-3}, min_history=100, min_history_s=3600.0).warm_start(_normal(5000, seed=21))
    rng = np.random.default_rng(22)
    for t in range(1000):  # 1,000 windows in 1,000 s: ten times min_history, not an hour
        bank.update("p", float(rng.normal()), ts=float(t))
    assert not bank.has_own("p")
    # a restart in the middle keeps the ring (the latest 100 scores) and when it began
    copy = ThresholdBank.from_state(json.loads(json.dumps(bank.to_state())))
    for b in (bank, copy):
        b.update("p", 5.0, ts=3700.0)  # an hour after the first: its own tracker, from the latest 100
        assert b.has_own("p")
    assert bank.to_state()["own"] == copy.to_state()["own"]
    quick = ThresholdBank("spot", {"q": 1e-3}, min_history=100).warm_start(_normal(5000, seed=21))
    for t in range(100):
        quick.update("p", float(rng.normal()), ts=float(t))
    assert quick.has_own("p")  # min_history_s = 0: as soon as it has 100
