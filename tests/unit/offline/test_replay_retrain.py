"""``streamvae replay --retrain``: the retraining loop back-tested on recorded data.

The recording is the simulated plant: first at its usual operating points (the initial
model trains on that part), then the whole fleet moves to new operating points (plant
11). The replay must retrain and swap at least once; a buffer full of unflagged faults
must be rejected and leave the version unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from streamvae.cli import main
from streamvae.offline.feed import FEATURES, SensorFeed

TINY = ["--window", "12", "--encoder", "32,16", "--latent", "4", "--epochs", "80", "--seed", "3"]
RETRAIN = ["--retrain", "--retrain-every", "300", "--retrain-sample-every", "2", "--retrain-margin", "60",
           "--retrain-min-windows", "800", "--retrain-min-interval", "600", "--retrain-drift", "none",
           "--retrain-epochs", "15"]


def _write(path: Path, *feeds: SensorFeed) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "entity", *FEATURES])
        for feed in feeds:
            for r in feed.records():
                w.writerow([r["ts"], r["entity"], *("" if v is None else v for v in r["values"].values())])
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_replay_retrains_after_concept_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = SensorFeed(4, 2.0, 1800, None, seed=1, plant=0)
    after = SensorFeed(4, 2.0, 3600, None, seed=2, plant=11, start_ts=before.end_ts + 2.0)
    src = _write(tmp_path / "feed.csv", before, after)
    out = tmp_path / "scores.csv"
    code = main(["replay", "--csv", str(src), "--entity-column", "entity", "--train-first", str(before.n_records),
                 "--out", str(out), "--open-after", "3", *TINY, *RETRAIN])
    text = capsys.readouterr()
    assert code == 0, text.err
    rows = _rows(out)
    assert list(rows[0])[-1] == "model_version"
    versions = [r["model_version"] for r in rows]
    assert versions[0] == "unsaved" and len(set(versions)) >= 2, sorted(set(versions))
    assert any(v.startswith("unsaved+retrain-") for v in versions)
    # versions only move forward: once swapped, later rows never go back to the old model
    first_new = next(i for i, v in enumerate(versions) if v != "unsaved")
    assert all(v != "unsaved" for v in versions[first_new:])
    assert "after " in text.out and "new windows" in text.out and "promoted unsaved+retrain-1" in text.out
    # false episodes per scored window fall after the swap (measured: 5 in 2456 windows before,
    # 3 in 4700 after; one pump that the stale model kept in alarm is starved of buffered
    # windows and stays in alarm: see the note in the lead's report)
    def episode_rate(part: list[dict[str, str]]) -> float:
        return sum("open" in r["alert"] for r in part) / sum(1 for r in part if r["score"])

    assert episode_rate(rows[first_new:]) < episode_rate(rows[:first_new])


def test_rejected_retrain_keeps_the_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A threshold nobody reaches lets every fault into the normal buffer: the gate must refuse it."""
    train = SensorFeed(4, 2.0, 1800, None, seed=1, plant=0)
    faults = "spike:5,level_shift:5,drift:5,noise_burst:5,broken_correlation:5,duration=150,warmup=0,gap=30"
    live = SensorFeed(4, 2.0, 3600, faults, seed=2, plant=0, start_ts=train.end_ts + 2.0)
    src = _write(tmp_path / "feed.csv", train, live)
    out = tmp_path / "scores.csv"
    code = main(["replay", "--csv", str(src), "--entity-column", "entity", "--train-first", str(train.n_records),
                 "--out", str(out), "--threshold", "fixed", "--value", "1e9", *TINY, *RETRAIN])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert {r["model_version"] for r in _rows(out)} == {"unsaved"}
    assert "rejected" in text.out and "contaminated" in text.out, text.out
    assert "0 promoted" in text.out


def test_bad_retrain_option_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "feed.csv", SensorFeed(1, 1.0, 100, None, seed=1))
    code = main(["replay", "--csv", str(src), "--entity-column", "entity", "--train-first", "0.5", "--out",
                 str(tmp_path / "o.csv"), "--retrain", "--retrain-buffer", "5", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--retrain-buffer" in err[0], err
