"""A threshold bank's histories saved as arrays come back exactly, and cost no JSON."""

from __future__ import annotations

import json

import numpy as np

from streamvae.core.bank import ThresholdBank


def test_histories_saved_as_arrays_restore_the_same_bank() -> None:
    rng = np.random.default_rng(1)
    bank = ThresholdBank("spot", {"q": 1e-3}, min_history=50, per_entity=True).warm_start(rng.exponential(size=2000))
    for k in range(120):  # some entities pass min_history (own trackers), some wrap their ring, some do not
        for e in range(6 if k < 40 else 3):
            bank.update(f"e{e}", float(rng.exponential()), 1000.0 + k)
    light = bank.to_state(hist=False)
    assert "hist" not in light and len(json.dumps(light)) < len(json.dumps(bank.to_state()))
    again = ThresholdBank.from_state(json.loads(json.dumps(light)), bank.hist_arrays())
    assert again.to_state() == bank.to_state()
    for e in ("e0", "e4"):  # and it goes on deciding the same
        assert again.update(e, 3.0, 2000.0) == bank.update(e, 3.0, 2000.0)
    assert ThresholdBank.from_state(bank.to_state()).to_state() == bank.to_state()  # the JSON form still loads
