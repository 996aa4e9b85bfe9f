"""One retrain against the model registry: the serving version, a candidate trained on a
:class:`~streamvae.lifecycle.loop.TrainingSet`, the gate, the registry.

The candidate is always added to the registry (so a rejected one can be inspected), but
``CURRENT`` moves only when the gate passes. Telling the daemons is the caller's job
(``streamvae retrain`` publishes a control event built from :class:`RetrainReport`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from streamvae.config import Config
from streamvae.errors import ConfigError
from streamvae.lifecycle.candidate import retrain
from streamvae.lifecycle.gate import GateReport
from streamvae.lifecycle.loop import TrainingSet
from streamvae.registry.store import Registry, RegistryError

if TYPE_CHECKING:  # the real import stays lazy: it loads TensorFlow
    from streamvae.model.vae import EpochLog

log = logging.getLogger(__name__)


@dataclass
class RetrainReport:
    """What one retrain did: ``promoted`` ``version`` or kept ``previous``, and why."""

    promoted: bool
    version: str
    previous: str
    reason: str  # why the retrain ran
    gate: GateReport
    normals: int
    anomalies: int
    seconds: float
    entry: dict[str, Any] = field(default_factory=dict)  # the registry's record of the promotion
    pruned: list[str] = field(default_factory=list)
    published: bool = False  # the caller told the daemons

    def summary(self) -> str:
        """One line: what happened and why."""
        head = (f"promoted {self.version} (was {self.previous})" if self.promoted
                else f"rejected {self.version} (serving {self.previous})")
        return (f"{head} after training on {self.normals} normal windows ({self.anomalies} confirmed anomalies) "
                f"in {self.seconds:.1f}s [{self.reason}]: " + "; ".join(self.gate.reasons))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the retrain child's verdict (``streamvae retrain --result FILE``)."""
        return {"result": "promoted" if self.promoted else "rejected", "version": self.version,
                "previous": self.previous, "reason": self.reason, "normals": self.normals, "anomalies": self.anomalies,
                "seconds": round(self.seconds, 3), "published": self.published, "pruned": self.pruned,
                "summary": self.summary(), "gate": self.gate.to_dict()}


def retrain_once(cfg: Config, data: TrainingSet, registry: Registry, reason: str = "manual",
                 seed: int = 0, on_epoch: Callable[[EpochLog], None] | None = None) -> RetrainReport:
    """Train a candidate on ``data``, gate it against the registry's CURRENT, store it,
    promote it if it passed, prune old versions (``cfg.model.keep_versions``).
    ``on_epoch``: each training epoch's report, for a progress display."""
    from streamvae.model import artifact

    t0 = time.perf_counter()
    previous = registry.current()
    if previous is None:
        raise ConfigError(f"model.path {cfg.model.path} has no CURRENT model to retrain from; add and promote one first "
                          "(streamvae models promote VERSION)")
    current = artifact.load(registry.path(previous))
    cand, report = retrain(current, data.normals, data.anomalies, cfg.retrain, seed=seed, entities=data.entities,
                           on_epoch=on_epoch)
    version = artifact.new_version_id()
    cand.version_ = version
    registry.add(cand, version)
    entry: dict[str, Any] = {}
    if report.passed:
        entry = registry.promote(version, reason=f"retrain: {reason}")
    else:
        log.warning("retrain rejected candidate %s: %s", version, "; ".join(report.reasons))
    pruned: list[str] = []
    try:
        pruned = registry.prune(cfg.model.keep_versions)
    except (RegistryError, OSError) as e:
        log.warning("could not prune the registry: %s", e)
    return RetrainReport(report.passed, version, previous, reason, report, int(len(data.normals)),
                         int(len(data.anomalies)), time.perf_counter() - t0, entry, pruned)
