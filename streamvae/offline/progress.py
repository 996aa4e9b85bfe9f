"""Progress on a terminal: one line on stderr, redrawn in place, for the long commands.

Training shows the epoch, the loss and the early-stopping state; replay and the
evaluations show rows done and rows per second. Nothing is written unless the stream is
a terminal and ``--quiet`` was not given, so logs, pipes, cron jobs and CI see no
control characters. Results still go to stdout; this is only the wait in between.

Examples
--------
>>> import io
>>> Progress(io.StringIO()).rows(10, 100)   # not a terminal: draws nothing
>>> Progress.for_args(argparse.Namespace(quiet=True)).live
False
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Callable, TextIO

if TYPE_CHECKING:  # the model module loads TensorFlow; a type is all this needs
    from streamvae.model.vae import EpochLog

BAR = 20  # cells of the bar
REDRAW_S = 0.1  # at most ten redraws a second: a terminal is slower than a replay's batches


class Progress:
    """One progress line on ``stream``, drawn only when it is a TTY and ``enabled``.

    Parameters
    ----------
    stream : where to draw (default ``sys.stderr``).
    enabled : False for ``--quiet``.
    label : what runs, at the start of the line.
    clock : seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, label: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.label = label
        self.clock = clock
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(enabled and isatty is not None and isatty())
        self._start = clock()
        self._drawn = 0.0  # clock of the last redraw
        self._width = 0  # characters on the line now
        self._pending = ""  # the newest state, when it came too soon after the last redraw

    @classmethod
    def for_args(cls, args: argparse.Namespace, label: str = "") -> "Progress":
        """The progress line of a command: on stderr unless ``args.quiet``."""
        return cls(sys.stderr, enabled=not getattr(args, "quiet", False), label=label)

    # -- what the commands report --------------------------------------------------------
    def epoch(self, e: EpochLog) -> None:
        """A training epoch: the bar over the maximum epochs, the losses, early stopping."""
        state = (f"stopping: no better val for {e.patience} epochs" if e.stopping
                 else f"patience {e.wait}/{e.patience}")
        self._draw(f"{_bar(e.epoch, e.epochs)} epoch {e.epoch}/{e.epochs} loss {e.loss:.3f} val {e.val_loss:.3f} "
                   f"best {e.best_val_loss:.3f} @{e.best_epoch} {state}", force=e.epoch in (1, e.epochs) or e.stopping)

    def rows(self, done: int, total: int | None = None, unit: str = "rows", note: str = "") -> None:
        """``done`` of ``total`` rows (files, windows...) and the rate since this object began."""
        dt = max(self.clock() - self._start, 1e-9)
        head = f"{_bar(done, total)} {done:,}/{total:,}" if total else f"{done:,}"
        self._draw(f"{head} {unit} {done / dt:,.0f} {unit}/s" + (f" {note}" if note else ""), force=done == total)

    def step(self, done: int, total: int, rows: int, unit: str = "files") -> None:
        """``done`` of ``total`` items (files of an evaluation) and the rows per second they held."""
        dt = max(self.clock() - self._start, 1e-9)
        self._draw(f"{_bar(done, total)} {done}/{total} {unit}, {rows:,} rows, {rows / dt:,.0f} rows/s", force=True)

    def clear(self) -> None:
        """Take the line away (before printing a result line to the same terminal)."""
        self._pending = ""
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def close(self) -> None:
        """Leave the last state on its own line (how training ended stays readable)."""
        if self._pending:
            self._write(self._pending)
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    # -- drawing ----------------------------------------------------------------------------
    def _draw(self, text: str, force: bool = False) -> None:
        if not self.live:
            return
        line = f"{self.label} {text}" if self.label else text
        now = self.clock()
        if not force and now - self._drawn < REDRAW_S:
            self._pending = line
            return
        self._drawn = now
        self._write(line)

    def _write(self, line: str) -> None:
        self._pending = ""
        pad = max(0, self._width - len(line))  # \r does not erase: blank what the longer last line left
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)


def _bar(done: int, total: int | None) -> str:
    if not total:
        return ""
    full = min(BAR, BAR * max(done, 0) // total)
    return "[" + "#" * full + "." * (BAR - full) + "]"
