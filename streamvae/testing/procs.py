"""The daemon as a child process: start, readiness, /metrics and /healthz, stop, CPU time.

One class for the integration tests, the demo and the benchmarks: ``DaemonProc`` runs a
command (``run_cmd(config)``, or a shim around the daemon) with its output appended to a
log file and its HTTP port set by ``STREAMVAE_HTTP__PORT``. Failures raise
``DaemonError``, an ``AssertionError`` (as numpy.testing's checks do), carrying the tail of
the daemon's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from streamvae.testing.net import free_port

ROOT = Path(__file__).resolve().parents[2]
_VENV_CLI = ROOT / ".venv" / "bin" / "streamvae"


class DaemonError(AssertionError):
    """The daemon exited, did not get ready, or did not catch up in time (with its log's tail)."""


def streamvae_cmd() -> list[str]:
    """The ``streamvae`` command: the checkout's ``.venv`` one, else this interpreter's module."""
    return [str(_VENV_CLI)] if _VENV_CLI.exists() else [sys.executable, "-m", "streamvae"]


def run_cmd(config: Path) -> list[str]:
    """``streamvae run --config CONFIG``."""
    return [*streamvae_cmd(), "run", "--config", str(config)]


def train(csvs: Sequence[Path], out: Path, *args: str, timeout: float = 900.0) -> Path:
    """``streamvae train --csv CSV ... --out OUT ARGS`` as a child process; ``out``.
    RuntimeError with the end of its output if it fails."""
    cmd = [*streamvae_cmd(), "train", *(a for c in csvs for a in ("--csv", str(c))), "--out", str(out), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"streamvae train failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return out


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{section: {key: value}}`` as a TOML config file (values as JSON literals); ``path``."""
    lines = []
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def tail(path: Path, n: int = 60) -> str:
    """The last ``n`` lines of a text file; ``(no log)`` if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[Any], timeout: float = 30.0, on_kill: Callable[[], None] | None = None) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds (``on_kill()`` called first); the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill()
            proc.kill()
            proc.wait(10)
    return proc.returncode


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a live process so far (Linux /proc); NaN if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return float("nan")


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MiB (Linux /proc): ``rss`` now (VmRSS), ``peak`` (VmHWM)."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            got[k] = float(v.split()[0]) / 1024
    if "VmRSS" not in got:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status (Linux only)")
    return {"rss": got["VmRSS"], "peak": got.get("VmHWM", float("nan"))}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{labels}': value}``, one entry per sample line: a
    histogram's ``_bucket{le="..."}``, ``_count`` and ``_sum`` lines each count. Left
    out: comments, unparsable lines, and the ``_created`` timestamps prometheus-client
    adds to counters and histograms unless they are disabled (the daemon disables them).
    Sample lines carry no timestamp (prometheus-client writes none)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            if name.split("{", 1)[0].endswith("_created"):
                continue
            try:
                out[name] = float(v)
            except ValueError:
                pass
    return out


class DaemonProc:
    """``cmd`` as a child process serving the daemon's HTTP port, its output appended to ``log``.

    ``http_port``: the port it is told to serve (default: a free one); ``env``: variables
    added to this process's environment. Nothing waits here: call ``wait_ready``.
    """

    def __init__(self, cmd: Sequence[str], log: Path, http_port: int | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.http_port = http_port or free_port()
        self.log = log
        self._fh = log.open("ab")
        full_env = {**os.environ, **(env or {}), "STREAMVAE_HTTP__PORT": str(self.http_port)}
        self.proc = subprocess.Popen(list(cmd), stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=full_env, cwd=cwd)

    # -- HTTP ------------------------------------------------------------------------------

    def _get(self, path: str, timeout: float) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
            body: bytes = r.read()
        return body

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Until /healthz answers; ``time.perf_counter()`` at that moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self._get("/healthz", 1.0)
                return time.perf_counter()
            except OSError:
                time.sleep(0.05)
        raise DaemonError(f"daemon not ready in {timeout:g}s\n{self.log_tail()}")

    def healthz(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self._get("/healthz", 2.0))
        return out

    def samples(self) -> dict[str, float]:
        """Every sample on /metrics: ``{'streamvae_alerts_total{kind="open"}': 3.0, ...}``."""
        return parse_metrics(self._get("/metrics", 5.0).decode())

    def metric_series(self, name: str) -> dict[str, float]:
        """Every series of ``streamvae_<name>``: label text -> value (``""`` for the unlabelled one),
        e.g. ``{'result="promoted"': 1.0}``."""
        head = f"streamvae_{name}"
        out = {}
        for key, v in self.samples().items():
            if key == head:
                out[""] = v
            elif key.startswith(head + "{") and key.endswith("}"):
                out[key[len(head) + 1 : -1]] = v
        return out

    def metric(self, name: str) -> float:
        """``streamvae_<name>`` summed over its labels (0 if absent)."""
        return sum(self.metric_series(name).values())

    def totals(self) -> dict[str, float]:
        """Every ``streamvae_`` metric summed over its labels, by name without the prefix."""
        out: dict[str, float] = {}
        for key, v in self.samples().items():
            name = key.split("{", 1)[0]
            if name.startswith("streamvae_"):
                out[name[10:]] = out.get(name[10:], 0.0) + v
        return out

    # -- the process -----------------------------------------------------------------------

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise DaemonError(f"daemon exited with {self.proc.returncode}\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (``subprocess.TimeoutExpired`` after ``timeout``); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0, on_kill: Callable[[], None] | None = None) -> int:
        """SIGTERM, SIGKILL after ``timeout``; closes the log; the exit code."""
        rc = stop(self.proc, timeout, on_kill)
        self._fh.close()
        return rc

    def close(self) -> None:
        """SIGKILL if still running; closes the log."""
        if self.proc.poll() is None:
            self.kill()
        self._fh.close()

    def log_tail(self, n: int = 60) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return tail(self.log, n)
