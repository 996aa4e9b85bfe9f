"""Retraining in the service: the ``streamvae retrain`` job and the daemon's worker that
runs it in a child process.

``streamvae retrain --config FILE`` (cron, a Kubernetes CronJob, or the worker's child)
rebuilds the training set from the buffer the daemons left (``retrain.buffer``: the
files exported to ``retrain.state_dir``, or the ``topics.samples`` topic), runs one
retrain against the registry (:func:`streamvae.lifecycle.job.retrain_once`) and
publishes a control event: ``promote`` when the gate passed (every daemon then loads the
version), ``rejected`` with the gate's reasons otherwise. With ``--result FILE`` it also
writes its verdict as JSON (atomic): that file, not its log, is what the worker reads.

:class:`RetrainWorker` is what one daemon does for retraining, between and after its
batches: it drives a :class:`~streamvae.lifecycle.loop.Lifecycle` (the same object
``streamvae replay --retrain`` drives) and, when a retrain is due, exports the buffer
and starts the job as a CHILD PROCESS on one thread at nice +10: training never holds
the scoring loop or its core, and a crash in training cannot take the daemon down. The
child promotes through the registry and the control topic, so this daemon (and every
other one in the group) swaps models exactly as after ``streamvae models promote``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from streamvae.config import Config, load_config
from streamvae.core.clock import SYSTEM, Clock
from streamvae.core.pipeline import BatchResult
from streamvae.errors import ConfigError, DataError, StreamvaeError
from streamvae.files import write_atomic
from streamvae.lifecycle.job import RetrainReport, retrain_once
from streamvae.lifecycle.loop import NORMAL_FILE, Lifecycle, TrainingSet
from streamvae.lifecycle.normal import NormalBuffer
from streamvae.lifecycle.samples import fill_from_samples
from streamvae.offline.progress import Progress
from streamvae.registry.store import Registry
from streamvae.service import failpoints, logs
from streamvae.service.metrics import Metrics

log = logging.getLogger(__name__)

RESULT_FILE = "retrain-result.json"  # the child's verdict, next to its log
VERDICTS = ("promoted", "rejected", "failed")


# -- the job ------------------------------------------------------------------------------
def training_set(cfg: Config, window: int, n_features: int) -> TrainingSet:
    """What ``[retrain] buffer`` names, as a training set: the samples topic, or the files
    a daemon exported to ``retrain.state_dir``."""
    r = cfg.retrain
    lc = Lifecycle(r, window, n_features, trigger=False, recalibrate=False)
    if r.buffer == "kafka":
        from streamvae.kafka.samples import read_samples

        fill_from_samples(lc.buffer, lc.bank, read_samples(cfg.kafka, cfg.topics.samples))
        return lc.training_set()
    if not r.state_dir:
        raise ConfigError("retrain.buffer = 'local' needs retrain.state_dir (where the daemon exports its buffer); "
                          "or set retrain.buffer = 'kafka'")
    d = Path(r.state_dir)
    if not (d / NORMAL_FILE).is_file():
        raise DataError(f"no exported normal buffer {d / NORMAL_FILE}; has a daemon with retrain.state_dir = {d} retrained?")
    return lc.load(d).training_set()


def retrain_and_publish(cfg: Config, data: TrainingSet, registry: Registry, reason: str = "manual", seed: int = 0,
                        publish: Callable[[Mapping[str, Any]], None] | None = None,
                        progress: Progress | None = None) -> RetrainReport:
    """One retrain (:func:`~streamvae.lifecycle.job.retrain_once`), then its control event:
    ``publish(event)`` (default: on ``cfg.topics.control``). A failure to publish is logged
    and reported (``published=False``): CURRENT already moved, and daemons that re-read
    the registry still find it. ``progress``: the training epochs are drawn on it."""
    from streamvae.kafka.control import control_event, publish_control

    rep = retrain_once(cfg, data, registry, reason, seed, on_epoch=progress.epoch if progress is not None else None)
    if progress is not None:
        progress.close()
    if rep.promoted:
        e = rep.entry
        event = control_event("promote", rep.version, e.get("previous", rep.previous), f"retrain: {reason}; "
                              + "; ".join(rep.gate.reasons), at=e.get("at"))
    else:
        event = control_event("rejected", rep.version, rep.previous, f"retrain: {reason}", reasons=rep.gate.reasons)
    try:
        (publish or (lambda ev: publish_control(cfg.kafka, cfg.topics.control, ev)))(event)
        rep.published = True
    except StreamvaeError as e:
        log.error("control event %s %s not published: %s", event["type"], rep.version, e)
    log.info("%s", rep.summary())
    return rep


def retrain_cmd(args: argparse.Namespace) -> int:
    """``streamvae retrain --config FILE``: one retrain, a one-line summary, exit 0 whether
    the candidate was promoted or rejected; errors exit 2 (``--result``: ``failed``)."""
    result = getattr(args, "result", None)
    try:
        rep = _retrain(args)
    except (StreamvaeError, OSError) as e:
        if result:
            write_atomic(result, json.dumps({"result": "failed", "error": str(e)}).encode())
        if isinstance(e, OSError):
            raise DataError(f"retrain failed: {e}") from e
        raise
    if result:
        write_atomic(result, json.dumps(rep.to_dict()).encode())
    print(("promoted" if rep.promoted else "rejected") + ": " + rep.summary()
          + ("" if rep.published else " (control event NOT published)"))
    return 0


def _retrain(args: argparse.Namespace) -> RetrainReport:
    from streamvae.model import artifact, configure_threads

    cfg = load_config(args.config)
    logs.apply(cfg, getattr(args, "debug", False))
    configure_threads(getattr(args, "threads", None) or 2)
    reg = Registry(cfg.model.path)
    cur = reg.current()
    if cur is None:
        raise ConfigError(f"model.path {cfg.model.path} is not a registry with a CURRENT model; "
                          "add and promote one first (streamvae models promote VERSION)")
    m = artifact.read_manifest(reg.path(cur))
    data = training_set(cfg, int(m["config"]["window"]), int(m["config"]["n_features"]))
    return retrain_and_publish(cfg, data, reg, getattr(args, "reason", None) or "streamvae retrain",
                               getattr(args, "seed", 0) or 0, progress=Progress.for_args(args, "retrain"))


def read_verdict(path: Path) -> dict[str, Any] | None:
    """The child's ``--result`` file, or None when it is missing or not a verdict."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("result") in VERDICTS else None


# -- the daemon's side ----------------------------------------------------------------------
class RetrainWorker:
    """The daemon's retraining: a Lifecycle fed by confirmed batches, a child per retrain.

    Every batch whose delivery is confirmed goes to :meth:`observe`: normal windows into
    the buffer, flagged windows of opened episodes into the bank; with ``retrain.buffer =
    "kafka"`` the windows that entered are returned as sample records for the daemon to
    publish on ``topics.samples``, so one retrain job sees the whole group's data. With
    ``retrain.enabled`` (and a config file to hand the child), :meth:`tick` starts the
    child when the trigger says a retrain is due and reads its verdict when it ends. The
    buffers are saved with the daemon's checkpoint (:meth:`state`), and exported to
    ``retrain.state_dir`` right before a child starts.
    """

    def __init__(self, cfg: Config, config_path: str | None, window: int, n_features: int, metrics: Metrics,
                 clock: Clock = SYSTEM) -> None:
        r = cfg.retrain
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics
        self.clock = clock
        self.enabled = r.enabled and config_path is not None
        if r.enabled and config_path is None:
            log.warning("retrain.enabled, but the daemon was not started from a config file: no retrain worker")
        self.lifecycle = Lifecycle(r, window, n_features, trigger=self.enabled, recalibrate=False)
        self.state_dir = Path(r.state_dir) if r.state_dir else None
        self.publish = r.buffer == "kafka"
        self.child: Any = None
        self.child_log: Path | None = None
        self.child_result: Path | None = None
        self.child_reason = ""
        self.child_started = 0.0

    @property
    def buffer(self) -> NormalBuffer:
        return self.lifecycle.buffer

    @property
    def fleet_shift_on(self) -> bool:
        """Most of the fleet alarms together now (a new operating point)."""
        return self.lifecycle.fleet_shift_on

    # -- every confirmed batch ------------------------------------------------------------
    def observe(self, res: BatchResult, model_version: str) -> list[tuple[str, bytes, bytes]]:
        """Take a batch whose delivery is confirmed; the (topic, key, value) sample records
        to publish (none unless ``retrain.buffer = "kafka"``: a lost one costs nothing)."""
        seen = self.lifecycle.observe(res)
        self.metrics.model_behind_plant.set(int(self.lifecycle.behind))
        self.metrics.retrain_buffer_windows.set(len(self.lifecycle.buffer))
        self.metrics.retrain_anomaly_windows.set(len(self.lifecycle.bank))
        if not self.publish:
            return []
        from streamvae.kafka.samples import encode_sample

        topic, fleet = self.cfg.topics.samples, seen.fleet.to_dict()
        out = [(topic, e.encode(), encode_sample("normal", e, t, model_version, v, fleet=fleet)) for e, t, v in seen.normal]
        out += [(topic, ep.encode(), encode_sample("anomaly", e, t, model_version, v, episode_id=ep))
                for e, ep, t, v in seen.anomalies]
        return out

    # -- between batches --------------------------------------------------------------------
    def tick(self) -> None:
        """Start a due retrain; take the verdict of one that ended (time: the clock's)."""
        if not self.enabled:
            return
        now = self.clock.time()
        if self.child is None:
            reason = self.lifecycle.due(now)
            if reason is None:
                return
            self._start(now, reason)
        if self.child is not None and self.child.poll() is not None:
            self._child_done(now)

    def model_swapped(self, above_own: float = float("nan"), own: float | None = None) -> None:
        """A new model serves: its scores are on a new scale, so drift starts over;
        ``above_own``: the share of the recent windows above its own training threshold
        (above :data:`~streamvae.lifecycle.behind.BEHIND_SHARE` it came in behind the plant:
        another retrain is due; so it is when too many of its first windows score above
        ``own``, its own training threshold: :meth:`observe` watches them)."""
        self.lifecycle.model_swapped(above_own, own)
        self.metrics.model_behind_plant.set(int(self.lifecycle.behind))

    def state(self) -> dict[str, np.ndarray]:
        """Buffers and trigger, for the daemon's checkpoint (see ``Lifecycle.state``)."""
        return self.lifecycle.state()

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`; a state this worker cannot take (another model's
        window shape, a damaged file) is logged and the buffers start empty."""
        try:
            self.lifecycle.restore(state)
        except (StreamvaeError, KeyError, ValueError, TypeError) as e:
            log.warning("cannot restore the retraining state (%r); the buffers start empty", e)
            r = self.cfg.retrain
            self.lifecycle = Lifecycle(r, self.lifecycle.buffer.window, self.lifecycle.buffer.n_features,
                                       trigger=self.enabled, recalibrate=False)
        self.metrics.retrain_buffer_windows.set(len(self.lifecycle.buffer))
        self.metrics.retrain_anomaly_windows.set(len(self.lifecycle.bank))
        self.metrics.model_behind_plant.set(int(self.lifecycle.behind))

    def close(self) -> None:
        """On shutdown: a running retrain is left to finish (it promotes through the
        registry and the control topic, which do not need this process)."""
        if self.child is not None and self.child.poll() is None:
            log.info("retrain child pid %d still running; it finishes on its own", self.child.pid)

    def _spawn(self, cmd: list[str], env: dict[str, str], out: Any) -> Any:
        """Start the child (a ``subprocess.Popen``-like object: ``poll``, ``returncode``, ``pid``)."""
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: os.nice(10))  # noqa: PLW1509 (no threads start before exec)

    def _start(self, now: float, reason: str) -> None:
        assert self.config_path is not None
        seed = self.lifecycle.started(now)
        if self.state_dir is None:  # no configured place: a private one for this daemon's retrains
            self.state_dir = Path(tempfile.mkdtemp(prefix="streamvae-retrain-"))
        env = dict(os.environ, STREAMVAE_RETRAIN__STATE_DIR=str(self.state_dir))
        self.child_log, self.child_result = self.state_dir / "retrain.log", self.state_dir / RESULT_FILE
        cmd = [sys.executable, "-m", "streamvae", "retrain", "--config", self.config_path, "--reason", reason,
               "--threads", "1", "--seed", str(seed), "--result", str(self.child_result)]
        try:
            if self.cfg.retrain.buffer == "local":
                self.lifecycle.export(self.state_dir)
            self.child_result.unlink(missing_ok=True)
            with self.child_log.open("a") as out:  # every retrain of this daemon, one after the other
                self.child = self._spawn(cmd, env, out)
        except (OSError, StreamvaeError) as e:
            log.error("cannot start the retrain job (%s)", e)
            self.metrics.retrains.labels(result="failed").inc()
            self.lifecycle.finished(now, ok=False)
            return
        self.child_reason, self.child_started = reason, now
        self.metrics.retrains_started.inc()
        self.metrics.retrain_running.set(1)
        failpoints.reach("during_retrain")
        log.info("retrain started (pid %d): %s; %d normal windows, %d confirmed-anomaly windows; log %s",
                 self.child.pid, reason, len(self.lifecycle.buffer), len(self.lifecycle.bank), self.child_log)

    def _child_done(self, now: float) -> None:
        assert self.child is not None and self.child_result is not None
        rc = self.child.returncode
        verdict = read_verdict(self.child_result)
        result = verdict["result"] if rc == 0 and verdict is not None else "failed"
        self.lifecycle.finished(now, ok=result == "promoted")
        self.metrics.retrains.labels(result=result).inc()
        self.metrics.retrain_duration.observe(max(0.0, now - self.child_started))
        self.metrics.retrain_running.set(0)
        why = (verdict or {}).get("summary") or (verdict or {}).get("error") or f"no verdict in {self.child_result}"
        (log.info if result != "failed" else log.error)("retrain %s (exit %d, %s): %s; log %s", result, rc,
                                                         self.child_reason, str(why)[:2000], self.child_log)
        self.child = None
