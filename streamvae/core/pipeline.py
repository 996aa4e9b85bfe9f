"""The streaming pipeline: the one object that replay and the daemon both drive.

``process(readings)`` takes a batch of readings from any number of entities, in arrival
order, and returns everything that batch caused: scored windows (score, threshold,
flag, feature shares), alerts and rejected readings. No I/O happens inside: the caller
moves bytes, so any batch can be replayed in a unit test.

Per batch: every reading goes through the per-entity window assembler; all windows the
batch completed are scored in ONE model call; then, in order, each score meets its
entity's threshold tracker and the episode state machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.episodes import Alert, EpisodeTracker
from streamvae.core.scoring import Scorer
from streamvae.core.thresholds import ThresholdBank
from streamvae.core.windows import Window, WindowAssembler
from streamvae.errors import RecordError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reading:
    """One timestamped reading of one entity; ``values`` in model feature order, NaN = missing."""

    entity: str
    ts: float
    values: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ScoredWindow:
    entity: str
    start_ts: float
    end_ts: float
    end_index: int
    score: float
    threshold: float | None
    flagged: bool
    shares: npt.NDArray[np.float32]


@dataclass
class BatchResult:
    scored: list[ScoredWindow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[tuple[int, RecordError]] = field(default_factory=list)  # (index in batch, why)
    normal: list[Window] = field(default_factory=list)  # windows judged normal, outside episodes


class StreamPipeline:
    """Windows -> one model call -> thresholds -> episodes, for a batch of readings.

    Parameters
    ----------
    scorer : the model (``VAEDetector`` or anything with ``score`` and ``names``).
    thresholds : a calibrated :class:`ThresholdBank`.
    episodes : an :class:`EpisodeTracker`.
    assembler : a :class:`WindowAssembler` matching the model's window settings.
    top_k : features named in each alert.
    """

    def __init__(self, scorer: Scorer, thresholds: ThresholdBank, episodes: EpisodeTracker,
                 assembler: WindowAssembler, model_version: str, top_k: int = 3) -> None:
        self.scorer = scorer
        self.thresholds = thresholds
        self.episodes = episodes
        self.assembler = assembler
        self.model_version = model_version
        self.top_k = top_k
        self.names = list(scorer.names)
        self.windows_scored_ = 0

    def prime(self, readings: Sequence[Reading]) -> int:
        """Feed readings into the windows WITHOUT scoring them (rebuild open windows after
        a restart, or give the first live windows their past); returns how many were
        accepted."""
        n = 0
        for r in readings:
            try:
                self.assembler.push(r.entity, r.ts, r.values)
                n += 1
            except RecordError:
                pass
        return n

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult:
        result = BatchResult()
        done: list[Window] = []
        for i, r in enumerate(readings):
            try:
                done.extend(self.assembler.push(r.entity, r.ts, r.values))
            except RecordError as e:
                result.rejected.append((i, e))
        if not done:
            return result
        out = self.scorer.score(np.stack([w.values for w in done]))
        self.windows_scored_ += len(done)
        names, k = self.names, self.top_k
        for w, s, sh in zip(done, out.score.tolist(), out.shares):
            d = self.thresholds.update(w.entity, s)
            top: tuple[tuple[str, float], ...] = ()
            if d.flagged:
                order = np.argsort(-sh)[:k]
                top = tuple((names[j], float(sh[j])) for j in order)
            alerts = self.episodes.observe(
                w.entity, w.start_ts, w.end_ts, s, d.threshold, d.flagged, top, self.model_version, now,
            )
            result.alerts.extend(alerts)
            result.scored.append(ScoredWindow(w.entity, w.start_ts, w.end_ts, w.end_index, s, d.threshold, d.flagged, sh))
            if not d.flagged and not self.episodes.is_open(w.entity):
                result.normal.append(w)
        return result

    def swap_model(self, scorer: Scorer, model_version: str, recent_scores: npt.ArrayLike) -> None:
        """Serve a new model from the next batch on; thresholds are recalibrated on the new
        model's scores (``recent_scores``: the new model's scores of recent normal windows),
        because two models' scores are not on one scale. Windows in progress are kept."""
        if list(scorer.names) != self.names:
            raise ValueError(f"new model features {list(scorer.names)} differ from {self.names}")
        self.thresholds.recalibrate(np.asarray(recent_scores, dtype=np.float64))
        self.scorer = scorer
        self.model_version = model_version
