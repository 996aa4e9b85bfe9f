"""NAB's scoring in our code, checked against NAB's own published results, and the
evaluation's promise that it is causal and deterministic.

The reference check reads ../shared/data/nab-dev (NAB's per-row outputs of its HTM and
null detectors, with the S(t) columns NAB wrote at its published thresholds, and the
README's table of NAB's own threshold search on these 35 files).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import make_series
from streamvae.config import Config
from streamvae.offline.csvio import parse_ts, read_table
from streamvae.offline.nab import corpus, data_dir, profiles
from streamvae.offline.nabscore import PROFILES, ScoredFile, normalise, probation_rows, sigma, sweep

ROOT = Path(__file__).resolve().parents[3]

# NAB's S(t) columns were written at these thresholds (nab-dev README, "Reference outputs")
PUBLISHED = {
    "numenta": {"standard": 0.5421876907348634, "reward_low_FP_rate": 0.5751955032348636,
                "reward_low_FN_rate": 0.5421876907348634},
    "null": {p: 0.6250000000000001 for p in PROFILES},
}
# the README's table: NAB's threshold search and normalisation on these 35 files
TABLE = {
    "numenta": {"standard": (66.59, 0.555459), "reward_low_FP_rate": (60.81, 0.602095),
                "reward_low_FN_rate": (71.06, 0.555459)},
    "null": {"standard": (0.0, None), "reward_low_FP_rate": (0.0, None), "reward_low_FN_rate": (0.0, None)},
}


def _reference(detector: str) -> tuple[list[ScoredFile], list[np.ndarray], list[list[dict[str, str]]]]:
    root = data_dir(str(ROOT.parent / "shared" / "data" / "nab-dev"))
    files, scores, rows = [], [], []
    for f in corpus(root):
        cat, name = f.name.split("/")
        with (root / "reference" / detector / cat / f"{detector}_{name}").open() as fh:
            r = list(csv.DictReader(fh))
        files.append(ScoredFile.build(f.name, [parse_ts(x["timestamp"]) for x in r], f.limits))
        scores.append(np.array([float(x["anomaly_score"]) for x in r]))
        rows.append(r)
    return files, scores, rows


@pytest.mark.parametrize("detector", ["numenta", "null"])
def test_rescoring_nab_published_outputs_reproduces_nab(detector: str) -> None:
    files, scores, rows = _reference(detector)
    assert len(files) == 35 and sum(f.n_windows for f in files) == 55
    for profile, prof in PROFILES.items():
        # 1 per file, at NAB's published threshold: the sum of its S(t) column
        for f, sc, r in zip(files, scores, rows):
            theirs = math.fsum(float(x[f"S(t)_{profile}"]) for x in r)
            assert f.raw(sc >= PUBLISHED[detector][profile], prof) == pytest.approx(theirs, abs=1e-9), (f.name, profile)
        # 2 the threshold search and the normalised score of the README's table
        best = sweep(files, scores, prof)
        want, thr = TABLE[detector][profile]
        assert round(best.normalised, 2) == want, profile
        if thr is None:
            assert best.threshold is None
        else:
            assert best.threshold == pytest.approx(thr, abs=1e-6)


def test_the_profiles_are_read_from_the_data() -> None:
    got = profiles(ROOT.parent / "shared" / "data" / "nab-dev")
    assert got == PROFILES


def test_scoring_rules_on_a_small_file() -> None:
    ts = [float(t) for t in range(200)]  # probation: 30 rows
    f = ScoredFile.build("x", ts, [(50.0, 59.0), (120.0, 139.0)])
    std = PROFILES["standard"]
    none = np.zeros(200, bool)
    assert f.raw(none, std) == -2.0  # two windows missed
    d = none.copy()
    d[[50, 55, 130]] = True  # the earliest detection of a window counts, once
    assert f.raw(d, std) == pytest.approx(1.0 + sigma(-(139 - 130 + 1) / 20) / sigma(-1.0))
    d = none.copy()
    d[[10, 40]] = True  # probation counts for nothing; before any window: the full cost
    assert f.raw(d, std) == pytest.approx(-2.0 - 0.11)
    d = none.copy()
    d[60] = True  # right after a window (10 rows wide): a fraction of the cost
    assert f.raw(d, std) + 2.0 == pytest.approx(0.11 * float(sigma(1.0 / 9.0)))
    assert -0.04 < f.raw(d, std) + 2.0 < -0.02
    d[100] = True  # 41 rows after it, more than 3 widths: the full cost
    assert f.raw(d, std) + 2.0 == pytest.approx(0.11 * float(sigma(1.0 / 9.0)) - 0.11)
    assert normalise(-2.0, 2, std) == 0.0 and normalise(2.0, 2, std) == 100.0
    assert probation_rows(200) == 30 and probation_rows(100_000) == 750


def test_the_search_may_choose_to_detect_nothing() -> None:
    ts = [float(t) for t in range(100)]
    f = ScoredFile.build("x", ts, [(80.0, 89.0)])
    s = np.zeros(100)
    s[20:70] = 1.0  # 50 false alarms outscore the one window they never reach
    best = sweep([f], [s], PROFILES["standard"])
    assert best.threshold is None and best.raw == -1.0


def test_evaluation_is_causal_and_deterministic(tmp_path: Path) -> None:
    """The first half of a file scores the same whether or not the second half exists
    (same training rows), and twice the same run gives the same figures."""
    from streamvae.model.vae import VAEConfig
    from streamvae.offline.replay import replay, train_on, warm_scores

    x = make_series(1200, seed=4)[:, :1] * 10 + 50
    x[900:910, 0] += 30  # an anomaly in the second half only
    path = tmp_path / "series.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "value"])
        for i, v in enumerate(x[:, 0]):
            w.writerow([1388534400 + 300 * i, repr(float(v))])
    vae = VAEConfig(window=12, n_features=1, encoder=(16, 8), latent=3, epochs=20, seed=5)
    cfg = Config()
    whole = read_table(path)

    def run(rows: int) -> np.ndarray:
        table = whole if rows == len(whole.values) else _head(whole, rows)
        det, train = train_on(table, None, 300, vae)
        return replay(table, det, 300, None, cfg, warm_scores(det, train), batch=97).score

    full, half, again = run(1200), run(600), run(1200)
    np.testing.assert_array_equal(full[:600], half)
    np.testing.assert_array_equal(full, again)
    assert np.isfinite(full[311:]).all()


def _head(t: object, n: int) -> object:
    from dataclasses import replace

    from streamvae.offline.csvio import Table

    assert isinstance(t, Table)
    return replace(t, ts=t.ts[:n], ts_text=t.ts_text[:n], values=t.values[:n], extra={k: v[:n] for k, v in t.extra.items()})
