"""One proof run: its topics, its registry and config, the live feed, the daemons, the reckoning.

A :class:`Run` creates uuid-named topics (input with ``partitions``, alerts, dead letters,
scores), a model registry holding the plant's model under three version ids (so a swap
can be asked for at any time), and a daemon config that publishes every scored window.
Daemons are started with :meth:`start` (optionally with a failpoint, see
streamvae/service/failpoints.py) and every exit is classified: a SIGKILL the scenario
asked for is expected, anything else is a crash. :meth:`reckon` stops the feed, lets one
daemon catch up, stops it with SIGTERM and accounts (streamvae/testing/proof/account.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

from streamvae.registry import Registry
from streamvae.testing.procs import DaemonError, DaemonProc, run_cmd, streamvae_cmd, tail, write_config
from streamvae.testing.proof import Context, Outcome
from streamvae.testing.proof.account import Topics as Output
from streamvae.testing.proof.account import account, first_score_after
from streamvae.testing.proof.plant import Feeder, daemon_sections
from streamvae.testing.topics import Cluster, Topics

VERSIONS = ("2026-01-01T00-00-00Z-0001", "2026-01-02T00-00-00Z-0002", "2026-01-03T00-00-00Z-0003")


class Run:
    """See the module doc. ``delivery``: the daemon's ``group.delivery``; ``settings``:
    ``{"section": {"key": value}}`` added to the daemon's config."""

    def __init__(self, ctx: Context, name: str, partitions: int, entities: int, steps_per_s: float,
                 delivery: str = "at_least_once", settings: dict[str, dict[str, Any]] | None = None) -> None:
        self.ctx, self.name = ctx, name
        self.work = ctx.work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.topics = Topics(ctx.bootstrap, partitions, prefix=f"{name}-")
        self.scores = self.topics.input.replace("sensors-", "scores-")
        with Cluster(ctx.bootstrap) as k:
            k.create({self.scores: 1})
        self.registry = Registry(self.work / "registry")
        for v in VERSIONS:
            self.registry.add(ctx.model, version=v)
        self.registry.promote(VERSIONS[0], reason="initial")
        self.serving = 0
        sections = daemon_sections(self.topics.config_sections(), self.registry.root)
        sections["topics"]["scores"] = self.scores
        if delivery != "at_least_once":
            sections["group"]["delivery"] = delivery
        for sec, kv in (settings or {}).items():
            sections.setdefault(sec, {}).update(kv)
        self.config = write_config(self.work / "daemon.toml", sections)
        self.outcome = Outcome(name, exactly_once=delivery == "exactly_once")
        self.feeder = Feeder(ctx.bootstrap, self.topics.input, entities, steps_per_s, seed=ctx.seed)
        self.starts: list[float] = []  # wall time of every restart
        self.expected_kill: set[int] = set()
        self.daemons: list[DaemonProc] = []
        self.t0 = time.monotonic()

    def start(self, failpoint: str | None = None, wait: bool = True, restart: bool = False) -> DaemonProc:
        """A daemon of the group (its log in the run's folder); ready unless it died on its
        failpoint first. ``restart``: it replaces one that died (its recovery is measured)."""
        if restart:
            self.starts.append(time.time())
        env = {"STREAMVAE_FAILPOINT": failpoint} if failpoint else {}
        d = DaemonProc(run_cmd(self.config), self.work / f"daemon-{len(self.daemons)}.log", env=env)
        self.daemons.append(d)
        if wait:
            try:
                d.wait_ready(90.0)
            except DaemonError:
                if d.proc.returncode != -signal.SIGKILL or not failpoint:
                    raise
        return d

    def kill(self, d: DaemonProc) -> None:
        """SIGKILL, as the scenario intends (a daemon already dead by then crashed)."""
        if d.proc.poll() is None:
            self.expected_kill.add(id(d))
            d.kill()

    def died_on_failpoint(self, d: DaemonProc, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``d`` to die at its failpoint; True if it did."""
        try:
            d.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if d.proc.returncode == -signal.SIGKILL:
            self.expected_kill.add(id(d))
            return True
        return False

    def promote_next(self) -> str:
        """Make the next version CURRENT and tell the daemons (``streamvae models promote``)."""
        self.serving = (self.serving + 1) % len(VERSIONS)
        v = VERSIONS[self.serving]
        r = subprocess.run([*streamvae_cmd(), "models", "promote", v, "--config", str(self.config)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"models promote {v} failed: {r.stderr[-2000:]}")
        return v

    def crashes(self) -> list[str]:
        """Every daemon exit the scenario did not cause, with its log's last lines."""
        out = []
        for d in self.daemons:
            rc = d.proc.poll()
            if rc is not None and id(d) not in self.expected_kill and rc != 0:
                out.append(f"{d.log}: exit {rc}\n{tail(d.log, 30)}")
        return out

    def reckon(self, last: DaemonProc, catch_up_s: float = 300.0) -> Outcome:
        """Stop the feed, let ``last`` score everything, stop it cleanly, account."""
        sent = self.feeder.finish()
        self.topics.wait_caught_up(catch_up_s, daemon=last)
        rc = last.stop(60.0)
        if rc != 0:
            self.expected_kill.discard(id(last))
        for d in self.daemons:
            d.close()
        got = Output.read(self.ctx.bootstrap, self.scores, self.topics.alerts, self.topics.dlq)
        out = account(self.outcome, sent, self.feeder.names, got)
        crashed = self.crashes()
        out.crashes = len(crashed)
        if crashed:
            out.notes["crash_logs"] = crashed
        for t, nxt in zip(self.starts, [*self.starts[1:], float("inf")]):
            r = first_score_after(got, t, nxt)  # None: killed again before it scored
            if r is not None:
                out.recovery_s.append(round(r, 2))
        out.notes["restarts_without_a_score"] = len(self.starts) - len(out.recovery_s)
        out.wall_s = round(time.monotonic() - self.t0, 1)
        out.notes["steps"] = sent.steps
        return out
