"""The command line: bad input ends as one line on stderr and exit 2; train then score works."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_series
from streamvae.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--window", "8", "--encoder", "16,8", "--latent", "3", "--epochs", "10", "--seed", "3"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m streamvae ARGS`` in a fresh interpreter (only for paths that stay cheap)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STREAMVAE_SKAB_DATA", None)
    return subprocess.run(
        [sys.executable, "-m", "streamvae", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=120
    )


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def _write_csv(path: Path, x: np.ndarray, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", *names])
        for i, row in enumerate(x):
            w.writerow([1_700_000_000 + 60 * i, *(f"{v:.5f}" for v in row)])
    return path


def test_missing_required_argument_subprocess() -> None:
    r = _run("train", "--out", "x")
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert "--csv" in line and "required" in line


def test_unreadable_csv_subprocess(tmp_path: Path) -> None:
    r = _run("train", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert line.startswith("streamvae: error:") and "nope.csv" in line
    assert not (tmp_path / "m").exists()


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["16,x", "0,8", ",", "-4"])
def test_bad_encoder_value(capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--csv", "x.csv", "--out", str(tmp_path / "m"), f"--encoder={value}"])
    assert e.value.code == 2
    assert "--encoder" in _one_line(capsys.readouterr().err)


def test_unreadable_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"ts,a\n1,\xff\xfe\n")
    assert main(["train", "--csv", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "UTF-8" in _one_line(capsys.readouterr().err)


def test_score_with_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "d.csv", make_series(30, seed=0))
    code = main(["score", "--model", str(tmp_path / "no-model"), "--csv", str(data), "--out", str(tmp_path / "s.csv")])
    assert code == 2
    assert "no-model" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "s.csv").exists()


def test_evaluate_skab_missing_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["evaluate", "skab", "--data", str(tmp_path / "no-skab"), "--no-plots"])
    assert code == 2
    assert "no SKAB data" in _one_line(capsys.readouterr().err)


def test_evaluate_skab_missing_data_subprocess(tmp_path: Path) -> None:
    r = _run("evaluate", "skab", "--data", str(tmp_path / "no-skab"), "--no-plots")
    assert r.returncode == 2
    _one_line(r.stderr)


def test_train_then_score(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    train_csv = _write_csv(tmp_path / "train.csv", make_series(300, seed=11))
    test = make_series(120, seed=12)
    test[60, 1] += 20.0  # a spike nobody could miss
    test_csv = _write_csv(tmp_path / "test.csv", test)
    model = tmp_path / "model"

    assert main(["train", "--csv", str(train_csv), "--out", str(model), *TINY]) == 0
    assert "saved" in capsys.readouterr().out
    assert (model / "checksum.sha256").is_file()

    scores, plot = tmp_path / "out" / "scores.csv", tmp_path / "out" / "scores.png"
    assert main(["score", "--model", str(model), "--csv", str(test_csv), "--out", str(scores), "--plot", str(plot)]) == 0
    capsys.readouterr()
    with scores.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ts", "score", "threshold", "flag", "top_features"]
    body = rows[1:]
    assert len(body) == len(test)
    w = 8
    assert all(r[1] == "" for r in body[: w - 1])  # no window ends before reading W-1
    assert all(r[1] != "" and np.isfinite(float(r[1])) for r in body[w - 1 :])
    thr = {r[2] for r in body}
    assert len(thr) == 1
    for r in body:
        flagged = r[3] == "1"
        assert r[3] in ("0", "1")
        assert (r[1] != "" and float(r[1]) > float(r[2])) == flagged
        assert (r[4] != "") == flagged
    # every window containing the spike (ending at rows 60..67) is flagged, with "b" on top
    for i in range(60, 60 + w):
        assert body[i][3] == "1", body[i]
        assert body[i][4].startswith("b:"), body[i]
    assert body[0][0] == str(1_700_000_000)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second train into the same directory is refused, one line
    assert main(["train", "--csv", str(train_csv), "--out", str(model), *TINY]) == 2
    assert "already exists" in _one_line(capsys.readouterr().err)


# --- a bad configuration stops a command at load, on one line ------------------------------
def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f'[model]\npath = "{tmp_path / "no-model"}"\n{text}')
    return p


def test_run_with_a_bad_threshold_stops_at_load_before_the_model(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """q = 0.001 is SPOT's risk, not a quantile: refused before the (missing) model is read."""
    for k in [k for k in os.environ if k.startswith("STREAMVAE_")]:
        monkeypatch.delenv(k)
    assert main(["run", "--config", str(_config(tmp_path, "[threshold]\nkind = 'quantile'\n"))]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == 'streamvae: error: threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.001'


def test_config_check_refuses_a_bad_environment_value_on_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMVAE_THRESHOLD__Q", "0.5")
    assert main(["config", "check", str(ROOT / "deploy" / "streamvae.toml")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith('threshold.q must be a number in (0, 0.1) for kind = "spot"; got 0.5')


def test_replay_flags_are_checked_by_the_config_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--threshold quantile --quantile 0.2`` is refused before any CSV is read or model trained."""
    code = main(["replay", "--csv", str(tmp_path / "feed.csv"), "--train-first", "0.3", "--out", str(tmp_path / "o.csv"),
                 "--threshold", "quantile", "--quantile", "0.2"])
    assert code == 2
    assert 'threshold.q must be a number in [0.5, 1) for kind = "quantile"; got 0.2' in _one_line(capsys.readouterr().err)
