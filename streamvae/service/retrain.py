"""The retrain job: buffer snapshot -> train -> gate -> registry -> control event.

:func:`retrain_once` is the whole job, used by ``streamvae retrain --config FILE`` (cron,
a Kubernetes CronJob) and by the daemon's background worker. The candidate is always
saved into the registry (so a rejected one can be inspected), but CURRENT moves only
when the gate passes; then a ``promote`` event on ``topics.control`` tells every daemon
to load it. A rejection is logged, counted, and published as a ``rejected`` event with
the gate's reasons (daemons ignore it; operators and dashboards read it).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from streamvae.config import Config, load_config
from streamvae.core.buffer import AnomalyBank, NormalBuffer, stack
from streamvae.errors import ConfigError, DataError, StreamvaeError
from streamvae.registry.gate import GateReport

log = logging.getLogger(__name__)

NORMAL_FILE = "normal.npz"  # in retrain.state_dir: the local NormalBuffer
ANOMALY_FILE = "anomalies.npz"  # in retrain.state_dir: the local AnomalyBank


@dataclass
class RetrainCounters:
    """Outcomes since start (the daemon exports them as metrics)."""

    promoted: int = 0
    rejected: int = 0
    failed: int = 0


@dataclass
class RetrainReport:
    promoted: bool
    version: str
    previous: str | None
    reason: str  # why the retrain ran
    gate: GateReport
    normals: int
    anomalies: int
    seconds: float
    published: bool = False
    pruned: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what happened and why."""
        head = (f"promoted {self.version} (was {self.previous})" if self.promoted
                else f"rejected {self.version} (serving {self.previous})")
        return (f"{head} after training on {self.normals} normal windows ({self.anomalies} confirmed anomalies) "
                f"in {self.seconds:.1f}s [{self.reason}]: " + "; ".join(self.gate.reasons))


def _as_arrays(normals: NormalBuffer | tuple[np.ndarray, Sequence[str]] | np.ndarray,
               min_windows: int = 200) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(normals, NormalBuffer):
        return normals.training_windows(min_windows)
    if isinstance(normals, tuple):
        return np.asarray(normals[0], np.float32), list(normals[1])
    return np.asarray(normals, np.float32), None


def retrain_once(cfg: Config, normals: NormalBuffer | tuple[np.ndarray, Sequence[str]] | np.ndarray,
                 anomalies: AnomalyBank | np.ndarray | None = None,
                 publish: Callable[[Mapping[str, Any]], None] | None = None, registry: Any = None,
                 reason: str = "manual", seed: int = 0, counters: RetrainCounters | None = None) -> RetrainReport:
    """Train a candidate on ``normals``, gate it against CURRENT, promote it if it passes.

    ``cfg.model.path`` is the registry; ``publish(event)`` sends a control event (default:
    ``publish_control`` on ``cfg.topics.control``); a failure to publish is logged and
    reported (``published=False``), since CURRENT already moved and daemons that poll
    the registry will still find it. ``registry``: a Registry-like object (tests).
    """
    from streamvae.model import artifact
    from streamvae.registry.retrain import retrain
    from streamvae.registry.store import Registry, RegistryError

    t0 = time.perf_counter()
    reg = registry if registry is not None else Registry(cfg.model.path)
    if publish is None:
        from streamvae.kafka.control import publish_control

        def publish(event: Mapping[str, Any]) -> None:
            publish_control(cfg.kafka, cfg.topics.control, event)

    previous = reg.current()
    if previous is None:
        raise ConfigError(f"model.path {cfg.model.path} has no CURRENT model to retrain from; add and promote one first "
                          "(streamvae models promote VERSION)")
    current = artifact.load(reg.path(previous))
    x, ents = _as_arrays(normals, cfg.retrain.min_windows)
    a = anomalies.snapshot()[0] if isinstance(anomalies, AnomalyBank) else anomalies
    try:
        cand, report = retrain(current, x, a, cfg.retrain, seed=seed, entities=ents)
        version = artifact.new_version_id()
        cand.version_ = version
        reg.add(cand, version)
    except (StreamvaeError, ValueError, OSError):
        if counters is not None:
            counters.failed += 1
        raise
    published = False
    if report.passed:
        entry = reg.promote(version, reason=f"retrain: {reason}")
        event = {"type": "promote", "version": version, "previous": entry.get("previous", previous),
                 "at": entry.get("at", time.time()), "reason": f"retrain: {reason}; " + "; ".join(report.reasons)}
        if counters is not None:
            counters.promoted += 1
    else:
        log.warning("retrain rejected candidate %s: %s", version, "; ".join(report.reasons))
        event = {"type": "rejected", "version": version, "previous": previous, "at": time.time(),
                 "reason": f"retrain: {reason}", "reasons": list(report.reasons)}
        if counters is not None:
            counters.rejected += 1
    try:
        publish(event)
        published = True
    except StreamvaeError as e:
        log.error("control event %s %s not published: %s", event["type"], version, e)
    pruned: list[str] = []
    try:
        pruned = reg.prune(cfg.model.keep_versions)
    except (RegistryError, OSError) as e:
        log.warning("could not prune the registry: %s", e)
    rep = RetrainReport(report.passed, version, previous, reason, report, int(len(x)), 0 if a is None else int(len(a)),
                        time.perf_counter() - t0, published, pruned)
    log.info("%s", rep.summary())
    return rep


def buffers_from_samples(records: Sequence[Mapping[str, Any]], window: int, n_features: int, max_windows: int,
                         max_anomalies: int, seed: int = 0) -> tuple[NormalBuffer, AnomalyBank]:
    """Fill a NormalBuffer and an AnomalyBank from sample records (already sampled and
    margin-checked by the daemons that published them); stratified as usual."""
    buf = NormalBuffer(max_windows, window, n_features, sample_every=1, margin=0.0, seed=seed)
    bank = AnomalyBank(max_anomalies, window, n_features, seed=seed)
    for r in sorted(records, key=lambda r: float(r["end_ts"])):
        v = stack([r["window"]], window, n_features)[0]
        if r["kind"] == "normal":
            buf.add(str(r["entity"]), float(r["end_ts"]), v)
        else:
            bank.add(str(r.get("episode_id") or r["entity"]), float(r["end_ts"]), v)
    return buf, bank


def load_buffers(cfg: Config, window: int, n_features: int) -> tuple[NormalBuffer, AnomalyBank]:
    """The buffers ``[retrain] buffer`` names: the samples topic, or the files in state_dir."""
    r = cfg.retrain
    if r.buffer == "kafka":
        from streamvae.kafka.samples import read_samples

        return buffers_from_samples(read_samples(cfg.kafka, cfg.topics.samples), window, n_features, r.max_windows,
                                    r.max_anomalies)
    if not r.state_dir:
        raise ConfigError("retrain.buffer = 'local' needs retrain.state_dir (where the daemon saves its buffer); "
                          "or set retrain.buffer = 'kafka'")
    d = Path(r.state_dir)
    if not (d / NORMAL_FILE).is_file():
        raise DataError(f"no saved normal buffer {d / NORMAL_FILE}; has a daemon with retrain.state_dir = {d} run?")
    buf = NormalBuffer(r.max_windows, window, n_features, r.sample_every, r.margin, min_windows=r.min_windows,
                       shift_span=r.shift_span).load(d / NORMAL_FILE)
    bank = AnomalyBank(r.max_anomalies, window, n_features)
    if (d / ANOMALY_FILE).is_file():
        bank.load(d / ANOMALY_FILE)
    return buf, bank


def retrain_cmd(args: argparse.Namespace) -> int:
    """``streamvae retrain --config FILE``: one retrain, a one-line summary, exit 0 whether
    the candidate was promoted or rejected (the reasons are printed); errors exit 2."""
    from streamvae.model import artifact, configure_threads
    from streamvae.registry.store import Registry

    cfg = load_config(args.config)
    configure_threads(getattr(args, "threads", None) or 2)
    reg = Registry(cfg.model.path)
    cur = reg.current()
    if cur is None:
        raise ConfigError(f"model.path {cfg.model.path} is not a registry with a CURRENT model; "
                          "add and promote one first (streamvae models promote VERSION)")
    m = artifact.read_manifest(reg.path(cur))
    window, n_features = int(m["config"]["window"]), int(m["config"]["n_features"])
    buf, bank = load_buffers(cfg, window, n_features)
    try:
        rep = retrain_once(cfg, buf, bank, reason=getattr(args, "reason", None) or "streamvae retrain")
    except OSError as e:
        raise DataError(f"retrain failed: {e}") from e
    print(("promoted" if rep.promoted else "rejected") + ": " + rep.summary()
          + ("" if rep.published else " (control event NOT published)"))
    return 0


# -- the daemon's side ----------------------------------------------------------------------
SAVE_EVERY_S = 60.0  # the local buffer is written to retrain.state_dir this often (and on exit)


class RetrainWorker:
    """What one daemon does for retraining, between and after its batches.

    Every batch: the windows judged normal go into a :class:`NormalBuffer` (and flagged
    windows of opened episodes into an :class:`AnomalyBank`); with ``retrain.buffer =
    "kafka"`` the accepted windows are also published on ``topics.samples``, so one
    retrain job sees the whole group's data; with ``retrain.state_dir`` the buffers are
    saved there every minute and on exit. With ``retrain.enabled``, a
    :class:`RetrainTrigger` watches the scores of normal windows and the buffer, and when
    a retrain is due it runs ``streamvae retrain --config FILE`` as a CHILD PROCESS, on
    one thread at nice +10: training never holds the scoring loop or its core, and a
    crash in training cannot take the daemon down. The child promotes through the
    registry and the control topic, so this daemon (and every other one in the group)
    swaps models exactly as after a manual ``streamvae models promote``.
    """

    def __init__(self, cfg: Config, config_path: str | None, window: int, n_features: int, metrics: Any) -> None:
        from streamvae.core.drift import RetrainTrigger

        r = cfg.retrain
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics
        self.buffer = NormalBuffer(r.max_windows, window, n_features, r.sample_every, r.margin, fleet_share=r.fleet_share,
                                   min_windows=r.min_windows, shift_span=r.shift_span)
        self.bank = AnomalyBank(r.max_anomalies, window, n_features)
        self.state_dir = Path(r.state_dir) if r.state_dir else None
        self._restore()
        self.trigger = RetrainTrigger.from_config(r, start=time.time()) if r.enabled else None
        if self.trigger is not None and config_path is None:
            log.warning("retrain.enabled, but the daemon was not started from a config file: no retrain worker")
            self.trigger = None
        self.publish = r.buffer == "kafka"
        self.child: Any = None
        self.child_log: Path | None = None
        self.child_reason = ""
        self.last_saved = time.monotonic()

    def _restore(self) -> None:
        d = self.state_dir
        if d is None:
            return
        for obj, name in ((self.buffer, NORMAL_FILE), (self.bank, ANOMALY_FILE)):
            p = d / name
            if p.is_file():
                try:
                    obj.load(p)
                    log.info("restored %d windows from %s", len(obj), p)
                except (StreamvaeError, OSError, ValueError, KeyError) as e:
                    log.warning("cannot restore %s (%s); starting it empty", p, e)

    # -- every batch ----------------------------------------------------------------------
    def after_batch(self, res: Any, producer: Any, model_version: str) -> None:
        if not res.scored:
            return
        fleet = self.buffer.counts_.fleet_shift
        added = self.buffer.observe(res)
        confirmed: list[tuple[str, float, np.ndarray]] | None = [] if self.publish else None
        self.bank.observe(res, added=confirmed)
        if self.publish and producer is not None:
            from streamvae.kafka.samples import encode_sample

            topic = self.cfg.topics.samples
            for entity, end_ts, values in added:  # fire and forget: a lost sample costs nothing
                producer.send(topic, key=entity.encode(), value=encode_sample("normal", entity, end_ts, model_version, None, values))
            for episode, end_ts, values in confirmed or ():
                producer.send(topic, key=episode.encode(),
                              value=encode_sample("anomaly", "", end_ts, model_version, None, values, episode_id=episode))
        if self.trigger is not None:
            if added:
                self.trigger.windows_added(len(added), self.buffer.counts_.fleet_shift - fleet)
            self.trigger.observe_scores(s.score for s in res.scored if not s.flagged)
        self.metrics.set("retrain_buffer_windows", len(self.buffer))
        self.metrics.set("retrain_anomaly_windows", len(self.bank))

    # -- between batches --------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.state_dir is not None and time.monotonic() - self.last_saved >= SAVE_EVERY_S:
            self.save()
        if self.trigger is None:
            return
        if self.child is not None:
            if self.child.poll() is not None:
                self._child_done(now)
            return
        reason = self.trigger.due(now, len(self.buffer))
        if reason is not None:
            self._start(now, reason)

    def model_swapped(self) -> None:
        """A new model serves: its scores are on a new scale, so drift starts over."""
        if self.trigger is not None and self.trigger.detector_ is not None:
            self.trigger.detector_.reset()

    def save(self) -> None:
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.buffer.save(self.state_dir / NORMAL_FILE)
            self.bank.save(self.state_dir / ANOMALY_FILE)
        except OSError as e:
            log.warning("cannot save the retrain buffers to %s (%s)", self.state_dir, e)
        self.last_saved = time.monotonic()

    def _start(self, now: float, reason: str) -> None:
        assert self.trigger is not None and self.config_path is not None
        env = dict(os.environ)
        if self.cfg.retrain.buffer == "local":
            if self.state_dir is None:  # no configured place: a private one for this retrain
                self.state_dir = Path(tempfile.mkdtemp(prefix="streamvae-retrain-"))
                env["STREAMVAE_RETRAIN__STATE_DIR"] = str(self.state_dir)
            self.save()
        log_dir = self.state_dir or Path(tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        self.child_log = log_dir / "retrain.log"
        cmd = [sys.executable, "-m", "streamvae", "retrain", "--config", self.config_path, "--reason", reason, "--threads", "1"]
        try:
            with self.child_log.open("a") as out:  # every retrain of this daemon, one after the other
                self.child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                              preexec_fn=lambda: os.nice(10))  # noqa: PLW1509 (no threads start before exec)
        except OSError as e:
            log.error("cannot start the retrain job (%s)", e)
            self.metrics.inc("retrains_total", result="failed")
            self.trigger.started(now)
            self.trigger.finished(now, ok=False)
            return
        self.trigger.started(now)
        self.child_reason = reason
        self.metrics.set("retrain_running", 1)
        log.info("retrain started (pid %d): %s; %d normal windows, %d confirmed-anomaly windows; log %s",
                 self.child.pid, reason, len(self.buffer), len(self.bank), self.child_log)

    def _child_done(self, now: float) -> None:
        assert self.trigger is not None and self.child is not None
        rc = self.child.returncode
        tail = ""
        if self.child_log is not None:
            try:
                lines = [ln for ln in self.child_log.read_text(errors="replace").splitlines() if ln.strip()]
                tail = lines[-1] if lines else ""
            except OSError:
                pass
        result = "failed" if rc != 0 else ("promoted" if tail.startswith("promoted") else "rejected")
        self.trigger.finished(now, ok=result == "promoted")
        self.metrics.inc("retrains_total", result=result)
        self.metrics.set("retrain_running", 0)
        (log.info if result != "failed" else log.error)("retrain %s (exit %d, %s): %s", result, rc, self.child_reason, tail[:2000])
        self.child = None

    def close(self) -> None:
        """On shutdown: save the buffers; a running retrain is left to finish (it promotes
        through the registry and the control topic, which do not need this process)."""
        self.save()
