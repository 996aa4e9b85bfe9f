"""k daemons of one consumer group, for scripts/bench_scaleout.py: started at once, each
under the latency shim (scripts/latencyshim.py: the unmodified daemon, its batches
stamped), watched until the group is stable, and stopped together; what the group has
scored, and the produce -> score latency of every record from the shims' stamps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from kafka.errors import KafkaError

from streamvae.testing.benchdata import bench_config
from streamvae.testing.paced import SHIM
from streamvae.testing.procs import ROOT, DaemonProc
from streamvae.testing.topics import Cluster, Topics

READY_S = 180.0  # k daemons importing TensorFlow at once on 2 cores


@dataclass
class Group:
    """k daemons of one group on ``topics`` (fresh group id, one config), each run through
    the latency shim (scripts/latencyshim.py), which writes its batches' stamps
    to ``stamps[i]`` when it exits."""

    k: int
    topics: Topics
    model: Path
    work: Path
    max_poll: int
    daemons: list[DaemonProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = f"bench-scale{self.k}-{uuid.uuid4().hex[:8]}"
        self.config = bench_config(self.topics, self.work / f"scale{self.k}.toml", self.model, self.id, self.max_poll)
        self.stamps = [self.work / f"stamps-{self.k}-{i}.json" for i in range(self.k)]

    def start(self) -> None:
        """Start all k at once; return when all are ready and the group is stable with k members."""
        for i in range(self.k):
            cmd = [sys.executable, str(SHIM), str(self.stamps[i]), str(self.config)]
            self.daemons.append(DaemonProc(cmd, self.work / f"daemon-{self.k}-{i}.log", cwd=ROOT))
        for d in self.daemons:
            d.wait_ready(READY_S)
        with Cluster(self.topics.bootstrap) as c:
            wait_stable(c, self.id, self.k, 120.0, self.check_alive)

    def pids(self) -> dict[str, int | None]:
        return {f"daemon{i + 1}": d.proc.pid for i, d in enumerate(self.daemons)}

    def check_alive(self) -> None:
        for d in self.daemons:
            d.check_alive()

    def stop(self) -> None:
        """SIGTERM to all at once, then wait for each; RuntimeError if one failed."""
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.terminate()
        for d in self.daemons:  # one SIGTERM each: DaemonProc.stop would send another to one still running
            try:
                d.proc.wait(60.0)
            except subprocess.TimeoutExpired:
                pass
        codes = [(d, d.stop(30.0)) for d in self.daemons]
        bad = [(d, rc) for d, rc in codes if rc != 0]
        if bad:
            d, rc = bad[0]
            raise RuntimeError(f"daemon exited with {rc}\n{d.log_tail()}")

    def close(self) -> None:
        """Kill whatever still runs (after a failure)."""
        for d in self.daemons:
            d.close()


def wait_stable(k: Cluster, group: str, members: int, timeout: float, check: Callable[[], None]) -> None:
    """Until ``group`` is Stable with ``members`` members, each assigned partitions."""
    deadline = time.monotonic() + timeout
    g: dict[str, Any] = {}
    while time.monotonic() < deadline:
        check()
        try:
            g = k.admin.describe_groups([group]).get(group, {})
        except KafkaError as e:  # no coordinator yet on a fresh broker
            if not e.retriable:
                raise
        ms = g.get("members") or []
        if g.get("group_state") == "Stable" and len(ms) == members and all(_assigned(m) for m in ms):
            return
        time.sleep(0.05)
    raise RuntimeError(f"group {group} not stable with {members} members in {timeout:g} s: {g}")


def _assigned(member: dict[str, Any]) -> bool:
    a = member.get("member_assignment")
    parts = getattr(a, "assigned_partitions", None)
    if parts is None and isinstance(a, dict):
        parts = a.get("assigned_partitions")
    return bool(parts)


def scored_total(k: Cluster, group: str, topic: str, ends: dict[int, int]) -> int:
    """Records of ``topic`` the group's committed ``scored_to`` covers (0 while the
    coordinator is not found yet, a retriable error)."""
    try:
        done = k.scored_to(group, topic)
    except KafkaError as e:
        if not e.retriable:
            raise
        return 0
    return sum(min(done.get(p, 0), e) for p, e in ends.items())


def latencies(stamp_files: Iterable[Path], cut_us: float) -> npt.NDArray[np.float64]:
    """Per record sent at or after ``cut_us``: ms from its ``sent_us`` to the moment
    ``process`` returned for its batch (the shims' stamps)."""
    out = []
    for path in stamp_files:
        for _start, t_score, _done, stamps in json.loads(path.read_text())["batches"]:
            sent = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)[:, 0]
            sent = sent[sent >= cut_us]
            if len(sent) and t_score > 0:
                out.append(t_score * 1e3 - sent / 1e3)
    return np.concatenate(out) if out else np.empty(0)
