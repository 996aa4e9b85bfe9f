"""When to retrain: a drift of the normal windows' scores, a new operating point, a model
that came in behind the plant, N new buffered windows, or a schedule; one retrain at a
time.

:class:`RetrainTrigger` is asked ``due(now)`` between batches and answers a human reason
or None. Time is passed in (the stream's time in replay, the daemon's clock), so a test
drives it without sleeping. The reasons, in the order they are checked:

1. ``drift: ...``: :class:`ScoreDrift` saw the scores of unflagged windows rise;
2. ``new operating point: ...``: ``max(50, min_windows / 4)`` windows were buffered while
   most of the fleet alarmed at once (:mod:`streamvae.lifecycle.fleet`);
3. ``behind the plant: ...``: the model serving now scored more than ``behind_share`` of
   the recent windows at its swap, or of the windows it scored first, above its own
   training threshold, and
   ``max(50, min_windows / 4)`` windows were buffered since the last retrain started
   (:mod:`streamvae.lifecycle.behind`);
4. ``after N new windows``: ``after_windows`` new buffered windows (0: never);
5. ``schedule``: ``schedule`` seconds since the last successful retrain (0: never).

Drift is watched on the scores of the windows the pipeline did not flag (higher = more
anomalous; :mod:`streamvae.lifecycle.loop` says why those): when the plant moves to a new
operating point, the stale model finds the new normal a little less probable, and those
scores creep up well before the false alarms pile up. Scores of two models are
not on one scale, so the detector is reset whenever the model changes, and scores are
standardised on a reference taken from the first ``warmup`` normal scores of each model
(median and MAD, robust to the odd high score) and clipped to +/- ``clip`` before river's
ADWIN or Page-Hinkley sees them.

Examples
--------
>>> trig = RetrainTrigger(after_windows=100, min_interval=60.0, drift="none", min_windows=10)
>>> trig.windows_added(150)
>>> trig.due(now=1000.0, buffered=150)
'after 150 new windows'
>>> trig.started(1000.0); trig.due(1001.0, buffered=150) is None   # one at a time
True
>>> trig.finished(1010.0, ok=True); trig.due(1020.0, buffered=150) is None  # counted afresh
True
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt

from streamvae.errors import ConfigError
from streamvae.lifecycle.behind import BEHIND_SHARE, BehindPlant
from streamvae.lifecycle.state import State, from_json, nest, part, to_json

log = logging.getLogger(__name__)

DRIFT_KINDS = ("adwin", "page_hinkley", "none")
_PH_FIELDS = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")


class ScoreDrift:
    """A drift detector on standardised scores of normal windows.

    Parameters
    ----------
    kind : ``adwin`` (river.drift.ADWIN; ``delta`` = its confidence, ``retrain.drift_delta``)
        or ``page_hinkley`` (river.drift.PageHinkley, upward changes only; it tolerates a
        rise of the standardised mean by ``ph_delta`` and alarms when the cumulated excess
        reaches ``threshold``, both in reference std units; ``delta`` is not used). With
        ``ph_delta`` = 0.5 a stationary stream drifts away from the alarm (-0.5 per score
        on average) while a rise of 1.3 std alarms after about 60 normal scores.
    warmup : normal scores that set the reference median and spread after each reset
        (1,000 by default: 200 covered a few percent of one load cycle of a small fleet,
        and ADWIN then fired on a stable plant).
    min_rise : ADWIN fires only when the recent mean is at least this many reference
        std above the reference (it detects changes both ways; falling scores are no
        reason to retrain).
    clip : standardised scores are clipped to +/- this.
    """

    def __init__(self, kind: str = "adwin", delta: float = 0.002, warmup: int = 1000, clip: float = 8.0,
                 threshold: float = 50.0, ph_delta: float = 0.5, min_rise: float = 0.5) -> None:
        if kind not in ("adwin", "page_hinkley"):
            raise ConfigError(f"retrain.drift must be one of adwin, page_hinkley (or none for no detector); got {kind!r}")
        if not 0 < delta < 1:
            raise ConfigError(f"retrain.drift_delta must be a number in (0, 1); got {delta!r}")
        self.kind = kind
        self.delta = delta
        self.warmup = warmup
        self.clip = clip
        self.threshold = threshold
        self.ph_delta = ph_delta
        self.min_rise = min_rise
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new model: its scores are on a new scale)."""
        from river import drift

        self.detector_: Any = (drift.ADWIN(delta=self.delta) if self.kind == "adwin"  # type: ignore[no-untyped-call]
                               else drift.PageHinkley(min_instances=30, delta=self.ph_delta, threshold=self.threshold,
                                                   alpha=1.0, mode="up"))
        self._ref: list[float] = []
        self.center_: float | None = None
        self.scale_: float | None = None
        self.n_ = 0
        self.detected_: str | None = None

    def update(self, score: float) -> bool:
        """Feed one normal window's score; True when drift is detected (then it stays
        latched in ``detected_`` until :meth:`reset`)."""
        if not math.isfinite(score):
            return False
        if self.center_ is None:
            self._ref.append(score)
            if len(self._ref) >= self.warmup:
                ref = np.asarray(self._ref)
                self.center_ = float(np.median(ref))
                mad = float(np.median(np.abs(ref - self.center_)))
                self.scale_ = max(1.4826 * mad, 1e-9 * max(1.0, abs(self.center_)))
                self._ref = []
            return False
        assert self.scale_ is not None
        z = min(self.clip, max(-self.clip, (score - self.center_) / self.scale_))
        self.n_ += 1
        self.detector_.update(z)
        rise = self.detector_.estimation if self.kind == "adwin" else self.min_rise
        if self.detector_.drift_detected and self.detected_ is None and rise >= self.min_rise:
            # ADWIN reports a change either way; only a RISE of the normal windows' scores
            # (the model fits today's normal worse) is a reason to retrain, and only a
            # rise of at least min_rise reference std (a load cycle moves them a little)
            if self.kind == "adwin":
                self.detected_ = f"drift: adwin (delta {self.delta:g}) after {self.n_} normal scores; window mean now {self.detector_.estimation:+.2f} std from the reference"
            else:
                self.detected_ = f"drift: page_hinkley (threshold {self.threshold:g} std) after {self.n_} normal scores"
            log.info("score drift detected: %s", self.detected_)
            return True
        return False

    def state(self) -> State:
        """The reference, the counters and river's detector. ADWIN's window travels as the
        bytes its Rust core serialises itself to (plain data, no pickle); Page-Hinkley's as
        its running sums. Should either fail to load (another river version), the detector
        starts empty on the restored reference (see :meth:`restore`)."""
        d = self.detector_
        meta: dict[str, Any] = {"kind": self.kind, "ref": self._ref, "center": self.center_, "scale": self.scale_, "n": self.n_,
                                "detected": self.detected_, "drift_detected": bool(d.drift_detected)}
        raw = np.empty(0, np.uint8)
        if self.kind == "adwin":
            raw = np.frombuffer(d._helper.__getstate__(), dtype=np.uint8).copy()
        else:
            meta["ph"] = {k: float(getattr(d, k)) for k in _PH_FIELDS}
            meta["ph_mean"] = [float(d._x_mean.n), float(d._x_mean.get())]
        return {"meta": to_json(meta), "river": raw}

    def restore(self, state: State) -> None:
        """Continue from :meth:`state`; a river detector that cannot be loaded (another
        kind, another river version) restarts empty on the saved reference: drift then
        needs the usual ~30 standardised scores of evidence again."""
        self.reset()
        m = from_json(state["meta"])
        if m.get("kind") != self.kind:
            log.info("saved drift state is for %s, this detector is %s: it starts afresh", m.get("kind"), self.kind)
            return
        self._ref = [float(s) for s in m["ref"]]
        self.center_, self.scale_, self.n_, self.detected_ = m["center"], m["scale"], int(m["n"]), m["detected"]
        try:
            self._restore_river(m, state["river"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            self._fresh_river(e)
        except BaseException as e:  # pyo3's PanicException (bytes it cannot read) derives from BaseException
            if type(e).__name__ != "PanicException":
                raise
            self._fresh_river(e)

    def _restore_river(self, m: dict[str, Any], raw: npt.NDArray[Any]) -> None:
        d = self.detector_
        if self.kind == "adwin":
            if raw.size == 0:
                raise ValueError("no saved ADWIN window")
            d._helper.__setstate__(raw.astype(np.uint8).tobytes())
        else:
            for k, v in m["ph"].items():
                setattr(d, k, float(v))
            d._x_mean.n, d._x_mean._mean = m["ph_mean"]
        d._drift_detected = bool(m["drift_detected"])

    def _fresh_river(self, why: BaseException) -> None:
        log.warning("the %s drift detector could not be restored (%r); it starts empty on the saved reference",
                    self.kind, why)
        ref, center, scale, n, detected = self._ref, self.center_, self.scale_, self.n_, self.detected_
        self.reset()
        self._ref, self.center_, self.scale_, self.n_, self.detected_ = ref, center, scale, n, detected


class RetrainTrigger:
    """Decides when a retrain is due; at most one runs at a time (see the module doc).

    Parameters
    ----------
    schedule : seconds between scheduled retrains (0: none).
    after_windows : retrain after this many new buffered windows (0: never).
    drift : ``adwin``, ``page_hinkley`` or ``none``: a :class:`ScoreDrift` on the scores
        of normal windows.
    drift_delta : see :class:`ScoreDrift`.
    min_interval : seconds between the start of one retrain and the next.
    min_windows : buffered windows needed before any retrain.
    start : time the trigger starts counting from (the schedule's origin; None: the
        first ``due``).
    behind_share : see :class:`~streamvae.lifecycle.behind.BehindPlant`.

    Use: ``observe_scores`` and ``windows_added`` per batch, ``due(now, buffered)``
    between batches; ``started(now)`` when a retrain begins and ``finished(now, ok)``
    when it ends. A successful retrain resets the window count and the drift detector
    (the next model's scores are on its own scale); a failed or rejected one keeps them,
    so the next try comes after ``min_interval`` AND ``min_windows / 2`` new buffered
    windows: retrying on the same buffer would only repeat the rejection.
    """

    _COUNTERS = ("new_windows_", "running_", "last_start_", "last_success_", "_origin", "retrains_", "failures_",
                 "last_failed_", "windows_at_start_", "fleet_windows_", "since_start_")

    def __init__(self, schedule: float = 0.0, after_windows: int = 0, drift: str = "adwin", drift_delta: float = 0.002,
                 min_interval: float = 600.0, min_windows: int = 1000, start: float | None = None,
                 drift_warmup: int = 1000, behind_share: float = BEHIND_SHARE) -> None:
        if drift not in DRIFT_KINDS:
            raise ConfigError(f"retrain.drift must be one of {', '.join(DRIFT_KINDS)}; got {drift!r}")
        for key, v in (("schedule", schedule), ("min_interval", min_interval)):
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ConfigError(f"retrain.{key} must be seconds >= 0; got {v!r}")
        if not (isinstance(after_windows, int) and after_windows >= 0):
            raise ConfigError(f"retrain.after_windows must be an int >= 0; got {after_windows!r}")
        self.schedule = float(schedule)
        self.after_windows = after_windows
        self.drift = drift
        self.min_interval = float(min_interval)
        self.min_windows = min_windows
        self.detector_ = None if drift == "none" else ScoreDrift(drift, drift_delta, warmup=drift_warmup)
        self.new_windows_ = 0
        self.running_ = False
        self.last_start_: float | None = None
        self.last_success_: float | None = start
        self._origin = start
        self.retrains_ = 0
        self.failures_ = 0
        self.last_failed_ = False
        self.windows_at_start_ = 0
        self.fleet_windows_ = 0
        self.behind = BehindPlant(behind_share, self.few_windows)
        self.since_start_ = 0  # windows buffered since the last retrain started

    @classmethod
    def from_config(cls, cfg: Any, start: float | None = None) -> "RetrainTrigger":
        """From a ``RetrainConfig`` (the ``[retrain]`` section)."""
        return cls(cfg.schedule, cfg.after_windows, cfg.drift, cfg.drift_delta, cfg.min_interval, cfg.min_windows, start)

    def windows_added(self, n: int, fleet: int = 0) -> None:
        """``n`` new buffered windows, of which ``fleet`` were sampled while most of the
        fleet alarmed (a new operating point)."""
        self.new_windows_ += n
        self.fleet_windows_ += fleet
        self.since_start_ += n

    def observe_scores(self, scores: Iterable[float]) -> None:
        """Scores of normal windows (higher = more anomalous), in stream order."""
        if self.detector_ is None:
            return
        for s in scores:
            self.detector_.update(float(s))

    def due(self, now: float, buffered: int | None = None) -> str | None:
        """The reason a retrain should start now, or None."""
        if self._origin is None:
            self._origin = now
        if self.running_:
            return None
        if self.last_start_ is not None and now - self.last_start_ < self.min_interval:
            return None
        if buffered is not None and buffered < self.min_windows:
            return None
        if self.last_failed_ and self.new_windows_ - self.windows_at_start_ < max(1, self.min_windows // 2):
            return None  # the last try was rejected or failed: not again on (nearly) the same buffer
        if self.detector_ is not None and self.detector_.detected_:
            return self.detector_.detected_
        if self.fleet_windows_ >= self.few_windows:
            return f"new operating point: {self.fleet_windows_} windows buffered while most of the fleet alarmed"
        if self.behind_ is not None and self.since_start_ >= self.few_windows:
            return f"{self.behind_}; {self.since_start_} windows buffered since the last retrain started"
        if self.after_windows and self.new_windows_ >= self.after_windows:
            return f"after {self.new_windows_} new windows"
        ref = self.last_success_ if self.last_success_ is not None else self._origin
        if self.schedule and now - ref >= self.schedule:
            return "schedule"
        return None

    def started(self, now: float) -> None:
        if self.running_:
            raise RuntimeError("a retrain is already running; call finished() first")
        self.running_ = True
        self.last_start_ = now
        self.windows_at_start_ = self.new_windows_
        self.since_start_ = 0

    def finished(self, now: float, ok: bool) -> None:
        """``ok``: a new model was promoted (counters and drift start afresh)."""
        self.running_ = False
        self.last_failed_ = not ok
        if ok:
            self.retrains_ += 1
            self.last_success_ = now
            self.new_windows_ = 0
            self.fleet_windows_ = 0
            if self.detector_ is not None:
                self.detector_.reset()
        else:
            self.failures_ += 1

    @property
    def few_windows(self) -> int:
        """``max(50, min_windows / 4)``: the buffered windows a new operating point, or a
        model behind the plant, waits for before its retrain."""
        return max(50, self.min_windows // 4)

    @property
    def behind_(self) -> str | None:
        """Why the serving model is behind the plant, or None (see :mod:`streamvae.lifecycle.behind`)."""
        return self.behind.reason_

    @property
    def watching(self) -> bool:
        """The first windows of a new model are being watched (see :meth:`model_swapped`)."""
        return self.behind.watching

    def observe_new_model(self, scores: Iterable[float]) -> None:
        """Scores of every window the new model scored (flagged or not), while :attr:`watching`."""
        self.behind.observe(scores)

    def model_swapped(self, above_own: float = float("nan"), own: float | None = None, watch: int = 0) -> None:
        """A new model serves. Its scores are on a new scale: drift starts over. And
        whether it came in behind the plant (:class:`~streamvae.lifecycle.behind.BehindPlant`:
        ``above_own``, the share of the recent windows above ``own``, its own training
        threshold; its first ``watch`` windows) decides whether another retrain is due
        once ``min_interval`` has passed and ``max(50, min_windows / 4)`` windows were
        buffered since the last retrain started (windows that model could not learn).

        >>> trig = RetrainTrigger(drift="none", min_interval=0.0, min_windows=100)
        >>> trig.model_swapped(above_own=0.04); trig.windows_added(50)
        >>> trig.due(0.0, buffered=500)
        'behind the plant: its own threshold let through 4.0% of the recent windows; 50 windows buffered since the last retrain started'
        >>> trig.model_swapped(above_own=0.0); trig.due(1.0, buffered=500) is None
        True
        """
        if self.detector_ is not None:
            self.detector_.reset()
        self.behind.swapped(above_own, own, watch)

    def state(self) -> State:
        """Counters and times; the drift detector under ``drift.``, the behind-the-plant
        mark under ``behind.``. A retrain running when
        the state was taken is not running after :meth:`restore` (its process did not
        survive a restart of the daemon), and counts as failed."""
        out: State = {"meta": to_json({k: getattr(self, k) for k in self._COUNTERS})}
        if self.detector_ is not None:
            out.update({f"drift.{k}": v for k, v in self.detector_.state().items()})
        out.update(nest("behind", self.behind.state()))
        return out

    def restore(self, state: State) -> None:
        for k, v in from_json(state["meta"]).items():
            if k in self._COUNTERS:
                setattr(self, k, v)
        if self.running_:
            self.running_, self.last_failed_ = False, True
            self.failures_ += 1
        drift = {k[len("drift."):]: v for k, v in state.items() if k.startswith("drift.")}
        if self.detector_ is not None and drift:
            self.detector_.restore(drift)
        if behind := part(state, "behind"):
            self.behind.restore(behind)
