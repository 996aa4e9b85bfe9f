"""The progress line: drawn on a terminal only, never with --quiet; training reports every
epoch's loss and early-stopping state; replay and evaluations report rows per second."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_series
from streamvae.cli import build_parser, main
from streamvae.model.detector import VAEDetector
from streamvae.model.vae import EpochLog, VAEConfig
from streamvae.offline.progress import REDRAW_S, Progress


class TTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _epoch(epoch: int, wait: int, patience: int = 5) -> EpochLog:
    return EpochLog(epoch, 50, loss=12.3456, val_loss=13.5, best_epoch=epoch - wait, best_val_loss=13.25,
                    wait=wait, patience=patience)


def _everything(p: Progress) -> None:
    p.epoch(_epoch(1, 0))
    p.epoch(_epoch(9, 5))
    p.rows(10, 100)
    p.step(1, 3, 500)
    p.clear()
    p.close()


def test_nothing_is_written_when_the_stream_is_not_a_terminal() -> None:
    out = io.StringIO()
    _everything(Progress(out))
    assert out.getvalue() == ""


def test_nothing_is_written_when_quiet_even_on_a_terminal() -> None:
    out = TTY()
    _everything(Progress(out, enabled=False))
    assert out.getvalue() == ""


def test_training_shows_epoch_loss_and_the_early_stopping_state() -> None:
    out = TTY()
    p = Progress(out, label="train", clock=Clock())
    p.epoch(_epoch(3, 2))
    line = out.getvalue()
    assert line.startswith("\rtrain [") and "epoch 3/50" in line and "loss 12.346" in line and "val 13.500" in line
    assert "best 13.250 @1" in line and "patience 2/5" in line
    p.epoch(_epoch(9, 5))  # the last one is drawn whatever the time
    assert "stopping: no better val for 5 epochs" in out.getvalue().split("\r")[-1]
    p.close()
    assert out.getvalue().endswith("\n")  # how training ended stays on the screen


def test_rows_per_second_and_redraws_at_most_ten_times_a_second() -> None:
    out, clock = TTY(), Clock()
    p = Progress(out, label="replay", clock=clock)
    clock.t += 2.0
    p.rows(1000, 4000)
    assert "1,000/4,000 rows 500 rows/s" in out.getvalue()
    drawn = out.getvalue()
    clock.t += REDRAW_S / 2
    p.rows(1100, 4000)  # too soon: not drawn
    assert out.getvalue() == drawn
    clock.t += REDRAW_S
    p.rows(4000, 4000)
    last = out.getvalue().split("\r")[-1]
    assert "4,000/4,000" in last and "[####################]" in last
    p.clear()
    assert out.getvalue().endswith("\r") and out.getvalue().split("\r")[-2].strip() == ""


def test_close_shows_the_newest_state_even_if_it_came_too_soon() -> None:
    out, clock = TTY(), Clock()
    p = Progress(out, clock=clock)
    p.rows(10)
    p.rows(20)  # same instant: held back
    assert "20 rows" not in out.getvalue()
    p.close()
    assert out.getvalue().rstrip("\n").split("\r")[-1].startswith("20 rows")


def test_a_shorter_line_blanks_what_the_longer_one_left() -> None:
    out, clock = TTY(), Clock()
    p = Progress(out, clock=clock)
    p.step(1, 10, 123_456)
    long = len(out.getvalue()) - 1
    p.step(2, 10, 0)
    assert len(out.getvalue().split("\r")[-1]) >= long


COMMANDS = [
    ["train", "--csv", "x.csv", "--out", "m"],
    ["replay", "--csv", "x.csv", "--out", "o.csv", "--train-first", "0.5"],
    ["evaluate", "skab"],
    ["evaluate", "nab"],
    ["retrain", "--config", "c.toml"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_long_command_accepts_quiet(argv: list[str]) -> None:
    assert build_parser().parse_args([*argv, "--quiet"]).quiet is True
    args = build_parser().parse_args(argv)
    assert args.quiet is False
    assert Progress.for_args(build_parser().parse_args([*argv, "--quiet"])).live is False


def test_fit_reports_every_epoch_and_keeps_the_best() -> None:
    x = np.stack([make_series(300, seed=s)[i : i + 8] for s in (1, 2) for i in range(0, 280, 4)]).astype(np.float32)
    seen: list[EpochLog] = []
    det = VAEDetector(VAEConfig(window=8, n_features=3, encoder=(8,), latent=2, epochs=6, patience=2, seed=1))
    det.fit(x, on_epoch=seen.append)
    info = det.fit_info_
    assert [e.epoch for e in seen] == list(range(1, info["epochs_run"] + 1))
    assert seen[-1].best_epoch == info["best_epoch"] + 1 and seen[-1].best_val_loss == pytest.approx(info["best_val_loss"])
    assert seen[-1].stopping or seen[-1].epoch == 6
    assert all(e.wait == e.epoch - e.best_epoch for e in seen)


def test_the_train_command_draws_on_a_terminal_and_not_with_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "a", "b", "c"])
        w.writerows([1_700_000_000 + 60 * i, *row] for i, row in enumerate(make_series(200, seed=5)))
    tiny = ["--window", "8", "--encoder", "8", "--latent", "2", "--epochs", "3"]
    for quiet, name in ((False, "m1"), (True, "m2")):
        tty = TTY()
        monkeypatch.setattr(sys, "stderr", tty)
        argv = ["train", "--csv", str(data), "--out", str(tmp_path / name), *tiny] + (["--quiet"] if quiet else [])
        assert main(argv) == 0
        drawn = "\r" in tty.getvalue()
        assert drawn is not quiet, tty.getvalue()
        if not quiet:
            assert "epoch 3/3" in tty.getvalue() or "stopping" in tty.getvalue()
    assert "\r" not in capsys.readouterr().out  # results on stdout stay plain
