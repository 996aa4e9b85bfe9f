"""The retraining lifecycle as one object that the daemon's retrain worker and
``streamvae replay --retrain`` both drive.

Per batch whose delivery is confirmed: :meth:`Lifecycle.observe` (buffers, trigger,
recalibration windows). Between batches: :meth:`~Lifecycle.due` -> a reason or None;
:meth:`~Lifecycle.started`, then :meth:`~Lifecycle.candidate` (here, in replay; in the
daemon, in a child process that rebuilds the training set from :meth:`~Lifecycle.export`),
:meth:`~Lifecycle.finished`; after a swap, :meth:`~Lifecycle.model_swapped`. What it
knows travels as :meth:`~Lifecycle.state` / :meth:`~Lifecycle.restore`, arrays only.

The drift trigger is fed the score of every window the pipeline did not flag, inside an
open episode or not. When the whole plant moves, the entities in alarm are the ones
whose scores rose most, and their unflagged windows carry that rise: fed only the
windows of ``res.normal`` (outside any episode), the detector saw the move late (drift
test: the first swap 880-1240 s into a 900 s ramp instead of ~600 s, and recall after it
fell below the target). A fault's few unflagged windows hardly move the mean of ADWIN's
window over the whole fleet.

Examples
--------
>>> from streamvae.config import RetrainConfig
>>> lc = Lifecycle(RetrainConfig(drift="none"), window=4, n_features=2)
>>> lc.due(0.0) is None, len(lc.buffer), lc.fleet_shift_on
(True, 0, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamvae.config import RetrainConfig
from streamvae.core.pipeline import BatchResult
from streamvae.lifecycle.bank import AnomalyBank
from streamvae.lifecycle.bank import Sample as BankSample
from streamvae.lifecycle.learn import FleetHistory
from streamvae.lifecycle.normal import NormalBuffer, Sample
from streamvae.lifecycle.recalibrate import RecalibrationWindows
from streamvae.lifecycle.state import State, from_json, nest, part, to_json
from streamvae.lifecycle.trigger import RetrainTrigger

if TYPE_CHECKING:
    from streamvae.lifecycle.gate import GateReport

NORMAL_FILE = "normal.npz"  # in retrain.state_dir: the exported normal buffer
ANOMALY_FILE = "anomalies.npz"  # in retrain.state_dir: the exported anomaly bank


@dataclass(frozen=True)
class Observed:
    """What one batch put into the buffers: (entity, end_ts, values) normal windows,
    (entity, episode id, end_ts, values) anomaly windows, and the fleet history the
    training-window choice now uses (every published normal sample carries it)."""

    normal: list[Sample] = field(default_factory=list)
    anomalies: list[BankSample] = field(default_factory=list)
    fleet: FleetHistory = FleetHistory()


@dataclass(frozen=True)
class TrainingSet:
    """What a candidate is trained and judged on: the chosen normal windows (N, W, F) in
    time order with their entities, and the confirmed anomaly windows."""

    normals: npt.NDArray[np.float32]
    entities: list[str]
    anomalies: npt.NDArray[np.float32]


def unflagged_scores(res: BatchResult) -> list[float]:
    """The scores of the windows the pipeline did not flag, in stream order."""
    return [s.score for s in res.scored if not s.flagged]


class Lifecycle:
    """Buffers, trigger and recalibration windows of one driver (see the module doc).

    Parameters
    ----------
    rcfg : the ``[retrain]`` settings.
    window, n_features : the model's W and F.
    seed : the reservoirs' randomness, and every candidate's training seed (one seed for
        every retrain, as the daemon has always trained: a retry differs by its buffer).
    trigger : keep a :class:`~streamvae.lifecycle.trigger.RetrainTrigger` (False: buffers
        only, e.g. a daemon that publishes samples but does not retrain).
    recalibrate : keep the recalibration windows (the daemon's hot swap keeps its own).
    """

    def __init__(self, rcfg: RetrainConfig, window: int, n_features: int, seed: int = 0, *,
                 trigger: bool = True, recalibrate: bool = True) -> None:
        r = self.rcfg = rcfg
        self.seed = seed
        self.buffer = NormalBuffer(r.max_windows, window, n_features, r.sample_every, r.margin, seed=seed,
                                   fleet_share=r.fleet_share, min_windows=r.min_windows, shift_span=r.shift_span)
        self.bank = AnomalyBank(r.max_anomalies, window, n_features, seed=seed)
        self.trigger = RetrainTrigger.from_config(r) if trigger else None
        self.recent = RecalibrationWindows() if recalibrate else None
        self.attempts_ = 0

    # -- every batch --------------------------------------------------------------------
    def observe(self, res: BatchResult) -> Observed:
        """Take one batch whose delivery is confirmed; what entered the buffers."""
        if not res.scored:
            return Observed(fleet=self.buffer.choice_)
        fleet = self.buffer.counts_.fleet_shift
        normal = self.buffer.observe(res)
        anomalies = self.bank.observe(res)
        if self.trigger is not None:
            if normal:
                self.trigger.windows_added(len(normal), self.buffer.counts_.fleet_shift - fleet)
            self.trigger.observe_scores(unflagged_scores(res))
            if self.trigger.watching:
                self.trigger.observe_new_model(s.score for s in res.scored)
        if self.recent is not None:
            self.recent.observe(res, self.buffer.fleet_shift_on)
        return Observed(normal, anomalies, self.buffer.choice_)

    @property
    def fleet_shift_on(self) -> bool:
        return self.buffer.fleet_shift_on

    # -- between batches -----------------------------------------------------------------
    def due(self, now: float) -> str | None:
        """Why a retrain should start now, or None (always None without a trigger)."""
        return None if self.trigger is None else self.trigger.due(now, len(self.buffer))

    def started(self, now: float) -> int:
        """A retrain starts; the seed its candidate is trained with."""
        if self.trigger is not None:
            self.trigger.started(now)
        self.attempts_ += 1
        return self.seed

    def finished(self, now: float, ok: bool) -> None:
        """It ended; ``ok``: a new model was promoted."""
        if self.trigger is not None:
            self.trigger.finished(now, ok)

    def model_swapped(self, above_own: float = float("nan"), own: float | None = None) -> None:
        """A new model serves: its scores are on a new scale, so drift starts over;
        ``above_own`` and its first windows scored above ``own`` (its own training
        threshold; its first ``min_windows x sample_every``, one retrain's worth of plant)
        say whether it came in behind the plant
        (:meth:`~streamvae.lifecycle.trigger.RetrainTrigger.model_swapped`)."""
        if self.trigger is not None:
            self.trigger.model_swapped(above_own, own, self.rcfg.min_windows * self.rcfg.sample_every)

    @property
    def behind(self) -> bool:
        """The serving model came in behind the plant, and no model has replaced it."""
        return self.trigger is not None and self.trigger.behind_ is not None

    # -- what a retrain learns -----------------------------------------------------------
    def training_set(self) -> TrainingSet:
        x, ents = self.buffer.training_windows(self.rcfg.min_windows)
        return TrainingSet(x, ents, self.bank.snapshot()[0])

    def candidate(self, current: Any, seed: int | None = None,
                  data: TrainingSet | None = None) -> tuple[Any, GateReport]:
        """Train a candidate on ``data`` (default :meth:`training_set`) and gate it against
        ``current``; ``seed``: default the one :meth:`started` returned."""
        from streamvae.lifecycle.candidate import retrain

        d = self.training_set() if data is None else data
        return retrain(current, d.normals, d.anomalies, self.rcfg, seed=self.seed if seed is None else seed,
                       entities=d.entities)

    def recalibration_windows(self) -> npt.NDArray[np.float32] | None:
        """The windows a new model's thresholds are recalibrated on (see
        :mod:`streamvae.lifecycle.recalibrate`); None when there are none."""
        return None if self.recent is None else self.recent.windows()

    # -- state ---------------------------------------------------------------------------
    def state(self) -> State:
        """Buffer (pending windows and fleet detector included), bank, trigger and
        recalibration windows, as arrays (``numpy.savez``-ready, no pickle)."""
        out = {**nest("normal", self.buffer.state()), **nest("bank", self.bank.state()),
               "meta": to_json({"attempts": self.attempts_})}
        if self.trigger is not None:
            out.update(nest("trigger", self.trigger.state()))
        if self.recent is not None:
            out.update(nest("recent", self.recent.state()))
        return out

    def restore(self, state: State) -> None:
        """Continue from :meth:`state` (taken with the same settings)."""
        self.buffer.restore(part(state, "normal"))
        self.bank.restore(part(state, "bank"))
        self.attempts_ = int(from_json(state["meta"])["attempts"])
        trig, recent = part(state, "trigger"), part(state, "recent")
        if self.trigger is not None and trig:
            self.trigger.restore(trig)
        if self.recent is not None and recent:
            self.recent.restore(recent)

    def export(self, state_dir: str | Path) -> None:
        """Write the buffers where the retrain job reads them (``retrain.state_dir``)."""
        d = Path(state_dir)
        self.buffer.save(d / NORMAL_FILE)
        self.bank.save(d / ANOMALY_FILE)

    def load(self, state_dir: str | Path) -> "Lifecycle":
        """Read what :meth:`export` wrote (the bank file may be missing)."""
        d = Path(state_dir)
        self.buffer.load(d / NORMAL_FILE)
        if (d / ANOMALY_FILE).is_file():
            self.bank.load(d / ANOMALY_FILE)
        return self
