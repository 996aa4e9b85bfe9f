"""The streaming pipeline: the one object that replay and the daemon both drive.

``process(readings)`` takes a batch of readings from any number of entities, in arrival
order, and returns everything that batch caused: scored windows (score, threshold,
flag, feature shares), alerts and rejected readings. No I/O happens inside: the caller
moves bytes, so any batch can be replayed in a unit test.

Per batch: every reading goes through the per-entity window assembler; all windows the
batch completed are scored in ONE model call; then, in order, each score meets its
entity's threshold tracker and the episode state machine.

The model is called without detail (scores only); the features behind each flagged
window an alert may name (``Naming``) come from a second call on those windows alone.

A big batch (``overlap`` or more readings, by default 512: streamvae/core/parts.py) is
scored in several model calls instead, on a worker thread: each part goes to the worker
as soon as it is assembled, so the model scores one part while the main thread
assembles the next; what is left when the batch is assembled goes in parts of
``MAX_PART`` (the last one small), and the main thread judges each part (threshold,
features, episodes) while the model scores the one after. The model holds no GIL while
it computes (the fused scorer's C pass), so the pipeline's own Python work overlaps the
model's. ``readings`` may be an iterator: the daemon decodes the records of a poll
lazily, so decoding overlaps the model too, and when the main thread has caught up with
the model it calls ``idle`` (the daemon notes the batch's records and parses its next
poll). The results are the same as with one call: a window's score does not depend on
its batch (common random numbers, see streamvae/model/score.py), everything stateful
runs on the main thread in arrival order, and a change accepted as an entity's new
normal waits for every part before it re-scores the entity's later windows.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from streamvae.core.baseline import NORMAL_SHARE, Baselines
from streamvae.core.episodes import Alert, EpisodeTracker, Naming
from streamvae.core.rules import SensorRules
from streamvae.core.parts import FIRST_PART, MAX_PART, OVERLAP, rest_parts
from streamvae.core.scoring import Scorer, finite_or_worst
from streamvae.core.bank import ThresholdBank
from streamvae.core.windows import Window, WindowAssembler
from streamvae.errors import RecordError

log = logging.getLogger(__name__)

# Reading, ScoredWindow (and windows.Window) are made once per reading or window on the
# daemon's main thread, its bottleneck in a drain: not frozen, since a frozen dataclass
# sets each field through object.__setattr__ (8 fields: 1.34 us to build, against 0.26).
# Nothing changes one after it is built.
@dataclass(slots=True, eq=False)
class Reading:
    """One timestamped reading of one entity; ``values`` in model feature order, NaN = missing."""

    entity: str
    ts: float
    values: npt.NDArray[np.float32]


@dataclass(slots=True)
class ScoredWindow:
    entity: str
    start_ts: float
    end_ts: float
    end_index: int
    score: float
    threshold: float | None
    flagged: bool
    shares: npt.NDArray[np.float32] | None  # (F,) for a flagged window an alert may name, else None


@dataclass
class BatchResult:
    scored: list[ScoredWindow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[tuple[int, RecordError]] = field(default_factory=list)  # (index in batch, why)
    normal: list[Window] = field(default_factory=list)  # windows judged normal, outside episodes
    windows: np.ndarray | None = None  # (len(scored), W, F): the values of the scored windows, in order
    origin: list[int] = field(default_factory=list)  # per scored window: index of the reading that completed it


class StreamPipeline:
    """Windows -> one model call -> thresholds -> episodes, for a batch of readings.

    Parameters
    ----------
    scorer : the model (``VAEDetector`` or anything with ``score`` and ``names``).
    thresholds : a calibrated :class:`ThresholdBank`.
    episodes : an :class:`EpisodeTracker`.
    assembler : a :class:`WindowAssembler` matching the model's window settings.
    top_k : features named in each alert.
    overlap : batches of at least this many readings are scored in parts on a worker
        thread, overlapped with the pipeline's Python work (0: never).
    baselines : the entities' accepted baselines (None: no acceptance).
    fleet_share : while more than this share of the live entities (and more than one)
        has an episode open, no change is accepted (0: no such rule).
    """

    def __init__(self, scorer: Scorer, thresholds: ThresholdBank, episodes: EpisodeTracker,
                 assembler: WindowAssembler, model_version: str, top_k: int = 3,
                 rules: SensorRules | None = None, overlap: int = OVERLAP, baselines: Baselines | None = None,
                 fleet_share: float = 0.5) -> None:
        self.overlap = overlap
        self.baselines = baselines
        self.fleet_share = fleet_share
        # the readings of each entity's open episode (with one window of context before
        # it), for the acceptance check; only entities with an open episode are here
        self._episode_rows: dict[str, deque[npt.NDArray[np.float32]]] = {}
        self.accepted_ = 0  # changes accepted as a new normal
        self._worker: ThreadPoolExecutor | None = None
        self.rules = rules
        self.scorer = scorer
        self.thresholds = thresholds
        self.episodes = episodes
        self.assembler = assembler
        self.model_version = model_version
        self.top_k = top_k
        self.names = list(scorer.names)

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

    def _score_async(self, x: npt.NDArray[np.float32]) -> "Future[Any]":
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamvae-score")
        return self._worker.submit(self.scorer.score, x, False)

    def close(self) -> None:
        """Stop the scoring worker thread, if one was started."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def process(self, readings: Iterable[Reading], now: float | None = None, size: int | None = None,
                idle: Callable[[list[tuple[int, RecordError]]], object] | None = None) -> BatchResult:
        """Everything one batch causes. ``readings``: a sequence, or an iterator with
        ``size``, about how many readings it will give (it decides the overlap).
        ``result.rejected`` indexes the readings in the order they came.

        ``idle``: called once, the first time the main thread would wait for the model
        (a big batch, assembled, its judged parts caught up with the scored ones): work
        of the caller's that needs no pipeline state (the daemon notes which records each
        window holds and reads its next poll). Its argument is ``result.rejected``,
        complete by then: every reading has been given to the windows."""
        result = BatchResult()
        n = len(readings) if size is None else size  # type: ignore[arg-type]
        done: list[Window] = []
        origin = result.origin
        push, add_done, add_origin = self.assembler.push, done.extend, origin.extend
        # A big batch goes to the worker in parts, each as soon as it is assembled: a small
        # first part, so that the worker starts almost at once, then parts twice as big as
        # the one before (the model takes ~2.3x longer per window than decoding and
        # assembling one: 28 against 12 us, bench_e2e's network), so that the worker never
        # waits for the main thread.
        cut = FIRST_PART if self.overlap and n >= self.overlap else 0
        sent = 0  # windows handed to the worker so far
        parts: list[tuple[npt.NDArray[np.float32], Any]] = []  # (windows' values, scores or a Future)
        for i, r in enumerate(readings):
            try:
                ws = push(r.entity, r.ts, r.values)
                if ws:
                    add_done(ws)
                    add_origin([i] * len(ws))
            except RecordError as e:
                result.rejected.append((i, e))
            if (cut and len(done) - sent >= cut) or len(done) - sent >= MAX_PART:
                xp = self._stack(done[sent : sent + MAX_PART])
                parts.append((xp, self._score_async(xp)))
                sent += len(xp)
                cut = min(cut * 2, MAX_PART)
        if not done:
            return result
        if sent < len(done):
            if parts:  # the rest in parts: the main thread judges each while the model scores the next
                for lo, hi in rest_parts(sent, len(done)):
                    xp = self._stack(done[lo:hi])
                    parts.append((xp, self._score_async(xp)))
            else:
                rest = self._stack(done[sent:])
                parts.append((rest, self.scorer.score(rest, detail=False)))
        x = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])  # as the model saw them
        raw = np.stack([w.values for w in done]) if self.baselines else x
        result.windows = raw
        broken = self.rules.check(raw) if self.rules is not None else None
        scores: list[float] = []
        verdicts: list[tuple[float | None, bool]] = []
        shares: dict[int, npt.NDArray[np.float32]] = {}
        pending = deque(out for _, out in parts)
        naming = Naming(self.episodes)

        def judge_next() -> None:
            nonlocal idle
            out = pending.popleft()
            if idle is not None and isinstance(out, Future) and not out.done():
                idle(result.rejected)
                idle = None
            part = finite_or_worst((out.result() if isinstance(out, Future) else out).score).tolist()
            self._judge(done, part, x, broken, scores, verdicts, shares, naming)

        # 3 episodes, in arrival order, each window as soon as its part is judged (steps 1
        # and 2); a change that persisted may become the new normal
        names, k = self.names, self.top_k
        observe, is_open = self.episodes.observe, self.episodes.is_open
        version = self.model_version
        add_alerts, add_scored, add_normal = result.alerts.extend, result.scored.append, result.normal.append
        track = self.episodes.accept_after > 0 and self.baselines is not None
        for j, w in enumerate(done):
            while j >= len(scores):
                judge_next()
            s, (thr, flagged) = scores[j], verdicts[j]
            entity = w.entity
            rule = broken[j] if broken is not None else None
            sh = shares.get(j)
            top: tuple[tuple[str, float], ...] = ()
            if rule is not None:
                top = ((names[rule[1]], 1.0),)
            elif sh is not None:
                order = np.argsort(-sh)[:k]
                top = tuple((names[i], float(sh[i])) for i in order)
            alerts = observe(entity, w.start_ts, w.end_ts, s, thr, flagged, top, version, now,
                             reason=rule[0] if rule is not None else "score")
            if alerts:
                add_alerts(alerts)
            add_scored(ScoredWindow(entity, w.start_ts, w.end_ts, w.end_index, s, thr, flagged, sh))
            if track:
                accepted = self._follow_episode(w, j, s, thr, alerts, rule is None)
                if accepted is not None:
                    add_alerts([accepted])
                    while pending:  # every window judged first, as in one model call
                        judge_next()
                    self._rescore_rest(entity, j, done, scores, verdicts, shares, broken)
            if not flagged and not is_open(entity):
                add_normal(w)
        return result

    def _judge(self, done: list[Window], part: list[float], x: npt.NDArray[np.float32],
               broken: list[tuple[str, int] | None] | None, scores: list[float],
               verdicts: list[tuple[float | None, bool]], shares: dict[int, npt.NDArray[np.float32]],
               naming: Naming) -> None:
        """Steps 1 and 2 for the next part's windows (``part``: their scores): 1 each score
        meets its entity's threshold, window by window; 2 the features behind each flagged
        window an alert may name (see ``Naming``), from a second, small model call."""
        update, get, named = self.thresholds.update, self.thresholds.get, naming.named
        flagged_at: list[int] = []
        for j, s in enumerate(part, len(scores)):
            w = done[j]
            if broken is not None and broken[j] is not None:
                verdicts.append((get(w.entity), True))  # a rule flags it (and names the feature); no threshold move
                named(w.entity, True)
            else:
                verdict = update(w.entity, s, w.end_ts)
                verdicts.append(verdict)
                if named(w.entity, verdict[1]):
                    flagged_at.append(j)
        scores.extend(part)
        for i in range(0, len(flagged_at), MAX_PART):
            at = flagged_at[i : i + MAX_PART]
            detail = self.scorer.score(x[at]).shares
            assert detail is not None  # asked for with detail
            for j, sh in zip(at, detail):
                shares[j] = sh if np.isfinite(sh).all() else self._extreme(x[j])

    def _extreme(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Feature shares for a window the model could not score (its likelihood overflowed):
        all of it on the feature furthest from the training data, in the model's
        standardised units where the model has a scaler."""
        scaler = getattr(self.scorer, "scaler_", None)
        v = values.astype(np.float64)
        with np.errstate(all="ignore"):
            a = np.abs(v if scaler is None else (v - scaler.mean_) / scaler.scale_)
            far = np.nanmax(np.where(np.isnan(a), -1.0, a), axis=0)
        out = np.zeros(values.shape[1], np.float32)
        out[int(np.argmax(far))] = 1.0
        return out

    def _stack(self, windows: list[Window]) -> npt.NDArray[np.float32]:
        """The windows' values as the model sees them: in their entity's accepted baseline."""
        b = self.baselines
        if not b:
            return np.stack([w.values for w in windows])
        return np.stack([b.apply(w.entity, w.values) if w.entity in b else w.values for w in windows])

    def _follow_episode(self, w: Window, j: int, score: float, thr: float | None, alerts: list[Alert],
                        by_score: bool) -> Alert | None:
        """Keep the readings of an open episode; when it is due, try to accept its change
        as the entity's new normal (see streamvae/core/baseline.py). Returns the close
        alert of an accepted change."""
        entity, rows = w.entity, self._episode_rows
        if not self.episodes.is_open(entity):
            rows.pop(entity, None)
            return None
        keep = self.episodes.accept_after + w.values.shape[0] - 1
        if any(a.kind == "open" for a in alerts) or entity not in rows:
            rows[entity] = deque(w.values, maxlen=keep)
        else:
            rows[entity].extend(w.values[-self.assembler.stride:])
        if not self.episodes.due(entity):
            return None
        # a change most of the fleet shares is a new operating point: retraining learns
        # that one (the normal buffer's fleet-shift rule, same share); acceptance is for one
        # entity's own change, and a baseline per entity would fight the next model
        fleet = self.fleet_share > 0 and self.episodes.open_count() > max(1.0, self.fleet_share * len(self.assembler))
        if fleet or not by_score or thr is None or not self._accept(entity, np.stack(rows[entity]), thr):
            self.episodes.postpone(entity)
            return None
        del rows[entity]
        self.accepted_ += 1
        log.info("accepted a persisting change of %s as its new normal", entity)
        return self.episodes.accept(entity, w.start_ts, w.end_ts, score, thr, self.model_version)

    def _accept(self, entity: str, rows: npt.NDArray[np.float32], thr: float) -> bool:
        """Find the smallest widening whose baseline makes the episode's windows normal."""
        b = self.baselines
        assert b is not None
        size = self.assembler.size
        if len(rows) < size:
            return False
        idx = np.arange(len(rows) - size + 1)[:, None] + np.arange(size)[None, :]
        for centre, scale in b.candidates(rows[size - 1:]):
            out = self.scorer.score(b.transform(rows[idx], centre, scale), False).score
            if float(np.mean(~(out <= thr))) <= NORMAL_SHARE:  # NaN counts as flagged
                b.set(entity, centre, scale)
                return True
        return False

    def _rescore_rest(self, entity: str, j: int, done: list[Window], scores: list[float],
                      verdicts: list[tuple[float | None, bool]], shares: dict[int, npt.NDArray[np.float32]],
                      broken: list[tuple[str, int] | None] | None) -> None:
        """The entity's later windows of this batch were scored before its change was
        accepted: score them again in the new baseline. Their verdicts use the threshold
        in force without teaching it (it already saw their first scores)."""
        later = [i for i in range(j + 1, len(done)) if done[i].entity == entity and (broken is None or broken[i] is None)]
        if not later:
            return
        out = self.scorer.score(self._stack([done[i] for i in later]))
        thr = self.thresholds.get(entity)
        rescored = finite_or_worst(out.score)
        for n, i in enumerate(later):
            scores[i] = float(rescored[n])
            flagged = thr is not None and bool(scores[i] > thr)
            verdicts[i] = (thr, flagged)
            shares.pop(i, None)
            if flagged and out.shares is not None:
                shares[i] = out.shares[n] if np.isfinite(out.shares[n]).all() else self._extreme(done[i].values)

    def state(self) -> dict[str, Any]:
        """What the pipeline has learned: thresholds, accepted baselines, episodes and the
        readings of open episodes kept for the acceptance check, JSON-ready except
        ``arrays`` (the entities' score histories, see ``ThresholdBank.hist_arrays``).
        Windows in progress are not in it: they are rebuilt from the source (see
        streamvae/kafka/offsets.py)."""
        b = self.baselines
        return {"model_version": self.model_version, "bank": self.thresholds.to_state(hist=False),
                "arrays": self.thresholds.hist_arrays(),
                "baselines": b.to_state() if b is not None else {}, "episodes": self.episodes.to_state(),
                "episode_rows": {e: np.stack(rows).tolist() for e, rows in self._episode_rows.items() if rows},
                "accepted": self.accepted_}

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to :meth:`state`'s output (taken with this model version)."""
        self.thresholds = ThresholdBank.from_state(state["bank"], state.get("arrays"), hold=self.thresholds.hold)
        if self.baselines is not None:
            self.baselines.load_state(state.get("baselines", {}))
        if "episodes" in state:  # (a threshold state written by an older version has none)
            self.episodes.load_state(state["episodes"])
        keep = self.episodes.accept_after + self.assembler.size - 1
        self._episode_rows = {str(e): deque(np.asarray(rows, np.float32), maxlen=keep)
                              for e, rows in state.get("episode_rows", {}).items()}
        self.accepted_ = int(state.get("accepted", 0))

    def swap_model(self, scorer: Scorer, model_version: str, recent_scores: npt.ArrayLike) -> None:
        """Serve a new model from the next batch on; thresholds are recalibrated on the new
        model's scores (``recent_scores``: the new model's scores of recent normal windows),
        because two models' scores are not on one scale. Windows in progress are kept;
        open episodes are re-judged by the new model (see ``EpisodeTracker.rejudge``)."""
        if list(scorer.names) != self.names:
            raise ValueError(f"new model features {list(scorer.names)} differ from {self.names}")
        self.thresholds.recalibrate(np.asarray(recent_scores, dtype=np.float64))
        if self.baselines is not None:
            self.baselines.reset()  # accepted baselines are in the old model's training units
        self._episode_rows.clear()
        self.scorer = scorer
        self.model_version = model_version
        self.episodes.rejudge()  # open episodes were the old model's verdicts
