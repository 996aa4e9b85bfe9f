"""A threshold bank's ``hold``: a score is judged at once and learned only once the later
windows that share a reading with its window came unflagged, so the edges of a fault,
which score just under the threshold, never lift it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import WINDOW, make_series

from streamvae.config import load_config
from streamvae.core.bank import ThresholdBank
from streamvae.core.compose import build_pipeline
from streamvae.core.pipeline import Reading
from streamvae.errors import ConfigError
from streamvae.model.detector import VAEDetector

RAMP = np.concatenate([np.linspace(0.0, 8.0, 30), np.full(30, 8.0), np.linspace(8.0, 0.0, 30)])


def spot(hold: int, per_entity: bool = False) -> ThresholdBank:
    warm = np.random.default_rng(99).normal(size=3000)
    return ThresholdBank("spot", {"q": 1e-3}, per_entity=per_entity, hold=hold).warm_start(warm)


def faulty_fleet(seed: int, readings: int = 5000, entities: int = 8, faults: int = 40) -> list[tuple[str, float, float]]:
    """Normal scores N(0, 1) per entity with faults that ramp up to 8, stay, ramp down:
    30 windows each, as a fault passes through the windows that overlap it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(entities, readings))
    for _ in range(faults):
        e, s = rng.integers(entities), rng.integers(100, readings - 200)
        x[e, s : s + len(RAMP)] += RAMP
    return [(f"e{e}", float(x[e, t]), float(t)) for t in range(readings) for e in range(entities)]


def learned(bank: ThresholdBank) -> float:
    return float(bank.global_.n_)  # type: ignore[attr-defined]  # SPOT: the scores it counted


def test_a_score_is_learned_only_after_hold_more_unflagged_windows_of_its_entity() -> None:
    bank = spot(hold=3)
    n0 = learned(bank)
    decisions = [bank.update("a", 0.1, float(t)) for t in range(5)]
    assert learned(bank) == n0 and all(d == (bank.get(), False) for d in decisions)
    bank.update("b", 0.1, 5.0)  # another entity's window does not release a's
    assert learned(bank) == n0
    bank.update("a", 0.1, 6.0)  # 6 held: the oldest 3 have 3 later windows each, and are learned in a run
    assert learned(bank) == n0 + 3


def test_a_flag_drops_the_held_scores_and_the_next_hold_windows() -> None:
    bank = spot(hold=3)
    n0 = learned(bank)
    for t in range(5):
        bank.update("a", 0.1, float(t))
    thr, flagged = bank.update("a", 50.0, 5.0)
    assert flagged and thr == bank.get()
    assert learned(bank) == n0 + 2  # the 2 oldest had their 3 later windows unflagged; the 3 newest are dropped
    for t in range(6, 14):  # 3 skipped, then 5 held
        assert bank.update("a", 0.1, float(t)) == (bank.get(), False)
    assert learned(bank) == n0 + 2
    bank.update("a", 0.1, 14.0)
    assert learned(bank) == n0 + 5


@pytest.mark.parametrize("seed", range(4))
def test_fault_edges_do_not_lift_spot_with_hold(seed: int) -> None:
    held, plain = spot(hold=29), spot(hold=0)
    z0 = held.get()
    assert z0 is not None
    for e, s, t in faulty_fleet(seed):
        held.update(e, s, t)
        plain.update(e, s, t)
    z_held, z_plain = held.get(), plain.get()
    assert z_held is not None and z_plain is not None
    # measured: 3.14 -> 3.07-3.22 with hold 29; without it 3.14 -> 3.56-13.74 on these seeds
    assert abs(z_held - z0) < 0.25, (z0, z_held, z_plain)


def test_without_hold_the_same_faults_lift_it() -> None:
    """The scenario above does exercise the failure: without hold, SPOT climbs past the
    faults' plateau on one of the seeds and stops flagging them."""
    tops = []
    for seed in range(4):
        plain = spot(hold=0)
        for e, s, t in faulty_fleet(seed):
            plain.update(e, s, t)
        tops.append(plain.get())
    assert max(t for t in tops if t is not None) > 8.0, tops


def test_held_scores_survive_a_save_and_restore_both_ways() -> None:
    bank = spot(hold=5, per_entity=True)
    stream = faulty_fleet(3, readings=400, entities=3, faults=2)
    for e, s, t in stream[:500]:
        bank.update(e, s, t)
    assert bank.to_state()["held"]
    via_json = ThresholdBank.from_state(json.loads(json.dumps(bank.to_state())))
    light = json.loads(json.dumps(bank.to_state(hist=False)))
    assert "held" not in light
    via_arrays = ThresholdBank.from_state(light, bank.hist_arrays())
    for again in (via_json, via_arrays):
        assert again.to_state() == bank.to_state()
    for e, s, t in stream[500:]:
        d = bank.update(e, s, t)
        assert via_json.update(e, s, t) == d and via_arrays.update(e, s, t) == d
    assert via_arrays.to_state() == bank.to_state()


def test_restore_takes_the_callers_hold_and_a_state_without_one_loads() -> None:
    bank = spot(hold=5)
    state = bank.to_state()
    assert ThresholdBank.from_state(state).hold == 5
    assert ThresholdBank.from_state(state, hold=2).hold == 2
    del state["hold"], state["held"]  # a state saved before hold existed
    assert ThresholdBank.from_state(state).hold == 0


def test_recalibrate_drops_the_held_scores_of_the_old_model() -> None:
    bank = spot(hold=5)
    bank.update("a", 0.1, 0.0)
    bank.recalibrate(np.random.default_rng(1).normal(size=3000))
    assert bank.to_state()["held"] == {}


def test_held_state_is_kept_for_at_most_max_entities() -> None:
    bank = ThresholdBank("spot", {"q": 1e-3}, per_entity=False, max_entities=2, hold=3)
    bank.warm_start(np.random.default_rng(0).normal(size=3000))
    for e in ("a", "b", "c"):
        bank.update(e, 0.1, 0.0)
    assert list(bank.to_state()["held"]) == ["b", "c"]


@pytest.mark.parametrize("hold", [-1, 1.5, True])
def test_a_bad_hold_is_a_config_error(hold: object) -> None:
    with pytest.raises(ConfigError, match="hold"):
        ThresholdBank("spot", hold=hold)  # type: ignore[arg-type]


def test_the_pipeline_holds_for_the_windows_that_share_a_reading_and_keeps_them_over_a_restart(
        detector: VAEDetector) -> None:
    cfg = load_config(None, env={})
    pipe = build_pipeline(cfg, detector)
    assert pipe.thresholds.hold == WINDOW - 1  # stride 1: the next W - 1 windows share a reading
    series = {"e0": make_series(100, seed=5), "e1": make_series(100, seed=6)}
    readings = [Reading(e, float(t), x[t].astype(np.float32)) for t in range(100) for e, x in series.items()]
    pipe.process(readings[:120])
    saved = pipe.state()
    assert len(saved["arrays"]["held_keys"]) == 2 and saved["arrays"]["held_len"].sum() > 0
    again = build_pipeline(cfg, detector)
    again.restore(saved)
    assert again.thresholds.hold == WINDOW - 1
    assert again.thresholds.to_state() == pipe.thresholds.to_state()
    scores = [w.score for w in pipe.process(readings[120:]).scored]  # (the windows are not in the state)
    pipe.restore(saved)
    for k, s in enumerate(scores):
        e = f"e{k % 2}"
        assert again.thresholds.update(e, s, 1e3 + k) == pipe.thresholds.update(e, s, 1e3 + k)
    assert again.thresholds.to_state() == pipe.thresholds.to_state()
