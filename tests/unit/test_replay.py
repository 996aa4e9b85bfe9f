"""`streamvae replay`: recorded rows through the streaming pipeline, one output row per input row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import make_series
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


def test_replay_builds_the_daemons_pipeline_stride_and_sensor_rules(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The model's stride and the config's [rules] hold in replay as in the daemon: with
    --stride 2 every second reading ends a window, a dead sensor opens a rule episode, and
    with [rules] dead_sensor = false it does not."""
    a, b = make_series(600, seed=21), make_series(600, seed=22)
    b[450:500, 0] = np.nan  # pump-2's sensor a goes dead for 50 readings
    src = _write(tmp_path / "feed.csv", {"pump-1": a, "pump-2": b})
    conf = tmp_path / "streamvae.toml"

    def run(rules: str) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
        conf.write_text(f"[rules]\ndead_sensor = {rules}\n[episodes]\nopen_after = 3\n")
        out, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
        code = main(["replay", "--csv", str(src), "--entity-column", "entity", "--train-first", "0.5", "--config",
                     str(conf), "--out", str(out), "--alerts", str(alerts), "--stride", "2", *TINY])
        assert code == 0, capsys.readouterr().err
        return list(csv.DictReader(out.open())), [json.loads(x) for x in alerts.read_text().splitlines()]

    rows, alerts = run("true")
    live = [r for r in rows[600:] if r["entity"] == "pump-1"]
    scored = [i for i, r in enumerate(live) if r["score"]]
    assert scored and set(np.diff(scored).tolist()) == {2}  # stride 2: a window every second reading
    dead = [x for x in alerts if x["kind"] == "open" and x["reason"] == "dead_sensor"]
    assert dead and dead[0]["entity"] == "pump-2"
    _, alerts = run("false")
    assert not any(x["reason"] == "dead_sensor" for x in alerts)
