"""Where the cores go, for the benchmarks (Linux /proc): the whole machine's busy time,
a process's share of a core over a span, the process behind a listening port, and the
CPU of every process outside a benchmark's own tree (``OtherLoad``).

On a shared machine a benchmark's figures are only as good as the cores it got; these
say how much each process took and how much the rest of the machine (``other``) did.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamvae.testing.procs import cpu_seconds


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat: all but idle
    and iowait); NaN where /proc/stat cannot be read."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (any local address), found through
    /proc/net/tcp{,6} and /proc/*/fd; None if not found (not Linux, or not ours to read)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                if os.readlink(f"/proc/{d}/fd/{fd}") in inodes:
                    return int(d)
        except OSError:
            continue
    return None


class CpuWatch:
    """Share of a core each named process used between ``start()`` and ``stop()``, and
    what the rest of the machine used (``other``) and left unused (``idle``, in cores).

    A pid of None, or a process gone by ``stop()``, gives NaN. ``seconds``: the wall time
    of the last span.

    Examples
    --------
    >>> w = CpuWatch({"me": os.getpid()})
    >>> w.start()
    >>> sorted(w.stop())
    ['idle', 'me', 'other']
    """

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.seconds = float("nan")
        self._t0 = self._busy0 = 0.0
        self._cpu0: dict[str, float] = {}

    def start(self) -> None:
        self._cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self._busy0, self._t0 = machine_busy_s(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        cpu = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.seconds = dt = max(time.perf_counter() - self._t0, 1e-9)
        out = {n: (cpu[n] - self._cpu0[n]) / dt for n in self.pids}
        busy = (machine_busy_s() - self._busy0) / dt
        known = sum(v for v in out.values() if v == v)
        out["other"] = max(0.0, busy - known)
        out["idle"] = max(0.0, (os.cpu_count() or 1) - busy)
        return out


class OtherLoad:
    """CPU used by processes outside this benchmark's process tree while a phase runs, in
    cores (averaged): on a shared 2-core machine it says how far to trust that phase.
    Counts processes alive at both ends of the phase (a given --bootstrap broker included)."""

    def __init__(self) -> None:
        self.by_phase: dict[str, float] = {}
        self._t0 = 0.0
        self._snap0: dict[tuple[int, str], float] = {}

    @staticmethod
    def _snapshot() -> tuple[dict[tuple[int, str], float], dict[int, int]]:
        cpu: dict[tuple[int, str], float] = {}
        parent: dict[int, int] = {}
        tck = os.sysconf("SC_CLK_TCK")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(d)
            parent[pid] = int(f[1])
            cpu[(pid, f[19])] = (int(f[11]) + int(f[12])) / tck  # keyed by (pid, start time)
        return cpu, parent

    def start(self) -> None:
        self._snap0, _ = self._snapshot()
        self._t0 = time.perf_counter()

    def stop(self, phase: str) -> float:
        snap1, parent = self._snapshot()
        dt = time.perf_counter() - self._t0
        me = os.getpid()

        def ours(pid: int) -> bool:
            seen = 0
            while pid > 1 and seen < 64:
                if pid == me:
                    return True
                pid, seen = parent.get(pid, 0), seen + 1
            return False

        used = sum(c - self._snap0[k] for k, c in snap1.items() if k in self._snap0 and not ours(k[0]))
        self.by_phase[phase] = used / dt
        return used / dt
