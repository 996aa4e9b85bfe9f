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


def _as_arrays(normals: NormalBuffer | tuple[np.ndarray, Sequence[str]] | np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(normals, NormalBuffer):
        x, ents, _ = normals.snapshot()
        return x, ents
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
    x, ents = _as_arrays(normals)
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
    buf = NormalBuffer(r.max_windows, window, n_features, r.sample_every, r.margin).load(d / NORMAL_FILE)
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
