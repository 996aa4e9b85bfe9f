"""`streamvae replay`: recorded rows through the streaming pipeline, one output row per input row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from streamvae.cli import main

TINY = ["--window", "8", "--encoder", "16,8", "--latent", "3", "--epochs", "25", "--seed", "3"]


def _write(path: Path, series: dict[str, np.ndarray]) -> Path:
    """Two entities interleaved row by row, one reading a minute each."""
    n = len(next(iter(series.values())))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "entity", "a", "b", "c"])
        for i in range(n):
            for e, x in series.items():
                w.writerow([1_700_000_000 + 60 * i, e, *(f"{v:.5f}" for v in x[i])])
    return path


def test_replay_trains_then_streams_and_alerts_on_the_spike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_series(900, seed=11), make_series(900, seed=12)
    b[700:720, 1] += 4.0  # a 20-minute fault on feature b of pump-2
    src = _write(tmp_path / "feed.csv", {"pump-1": a, "pump-2": b})
    out, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    code = main(["replay", "--csv", str(src), "--entity-column", "entity", "--train-first", "0.5",
                 "--out", str(out), "--alerts", str(alerts), "--close-after", "10", *TINY])
    assert code == 0, capsys.readouterr().err
    raw = out.read_bytes()
    assert b"\r" not in raw  # LF line endings
    everything = list(csv.DictReader(out.open()))
    assert len(everything) == 1800  # one per input row, the training rows too
    assert list(everything[0]) == ["ts", "entity", "part", "score", "threshold", "flag", "alert"]
    assert [r["part"] for r in everything] == ["train"] * 900 + ["live"] * 900
    assert all(r["score"] == "" for r in everything[:900])
    rows = everything[900:]
    # full precision: the written score is the float itself, not a rounding of it
    assert all(float(r["score"]) == float(repr(float(r["score"]))) for r in rows if r["score"])
    assert any(len(r["score"].split(".")[-1]) > 4 for r in rows if r["score"])
    for ent in ("pump-1", "pump-2"):
        mine = [r for r in rows if r["entity"] == ent]
        assert all(r["score"] == "" for r in mine[:7]) and all(r["score"] != "" for r in mine[7:])
    got = [json.loads(line) for line in alerts.read_text().splitlines()]
    opened = [g for g in got if g["kind"] == "open"]
    assert any(g["entity"] == "pump-2" and g["features"][0]["name"] == "b" for g in opened), got
    # the fault is one episode: open, at most one update per 300 s of it, close; not one alert per flagged window
    fault = [g for g in got if g["entity"] == "pump-2"]
    flagged = sum(1 for r in rows if r["entity"] == "pump-2" and r["flag"] == "1")
    assert flagged >= 15 and len(fault) <= 2 + 20 * 60 // 300
    assert sum(g["kind"] == "open" for g in fault) == 1
    assert {g["kind"] for g in fault} >= {"open", "close"}
    assert len({g["alert_id"] for g in got}) == len(got)


def test_replay_needs_exactly_one_model_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "feed.csv", {"x": make_series(50, seed=1)})
    assert main(["replay", "--csv", str(src), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model" in err[0] and "--train-first" in err[0]


@pytest.mark.parametrize("spec", ["0", "1.5", "abc", "5000"])
def test_replay_bad_train_first(tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str) -> None:
    src = _write(tmp_path / "feed.csv", {"x": make_series(100, seed=1)})
    assert main(["replay", "--csv", str(src), "--entity-column", "entity", "--out", str(tmp_path / "o.csv"), "--train-first", spec, *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-first" in err[0]
